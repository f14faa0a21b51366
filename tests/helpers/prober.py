"""Connections to a VIP from many sources, every INTERVAL, for a bounded time
(stdlib only), run inside the client namespace while a cluster changes under it.

    prober.py VIP PORT OUT SOURCE,SOURCE,... [--interval S] [--timeout S] [--duration S]
    prober.py VIP PORT OUT SOURCE:SPORT,... --pairs [--interval S] ...

Every INTERVAL seconds (default 0.1)
it starts one connection from each source (non-blocking, all in one thread),
each from the next port of 30000-59999, so a connection still waiting for an
answer never delays the next one; a connection gets TIMEOUT seconds (default
1.0: below the first SYN retransmit) to deliver its answer.  For every
connection it appends one line to OUT:

    <CLOCK_MONOTONIC at its start> <source index> <node name | ERROR:reason>

With ``--pairs`` the list holds fixed (source, port) pairs -- pairs the
harness knows to hash into one bucket -- and every INTERVAL one connection
starts, from the next pair in turn whose last connection has ended (one
4-tuple cannot be in flight twice); the index is the pair's.  A bucket's
return is then seen to within one INTERVAL, not one round of connections.

(flushed every 0.5 s; CLOCK_MONOTONIC is the machine's, so the harness can
put its own time.monotonic() beside it).  As client.py: an answer counts only
if it is exactly one line; two nodes answering one connection show up as a
reset, a timeout or garbled data.  It exits after DURATION seconds (default
600) or on SIGTERM, with the last connections' outcomes written.
"""

import argparse
import errno
import selectors
import signal
import socket
import time

FIRST_PORT, PORTS = 30000, 30000


class Probe:
    def __init__(self, index, source, sport, vip, port, timeout):
        self.index = index
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.data = b""
        self.connected = False
        self.sock = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((source, sport))
        code = self.sock.connect_ex((vip, port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, errno.errorcode.get(code, str(code)))

    def step(self):
        """Advance on readiness: None while pending, else the outcome."""
        if not self.connected:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                return "ERROR:connect:%s" % errno.errorcode.get(code, code)
            self.connected = True
            return None
        try:
            chunk = self.sock.recv(256)
        except BlockingIOError:
            return None
        except OSError as error:
            return "ERROR:%s" % type(error).__name__
        if chunk and len(self.data) < 256:
            self.data += chunk
            return None
        text = self.data.decode("utf-8", "replace")
        if text.count("\n") != 1 or not text.endswith("\n") or not text.strip():
            return "ERROR:garbled:%r" % text[:40]
        return text.strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("vip")
    parser.add_argument("port", type=int)
    parser.add_argument("out")
    parser.add_argument("sources", help="comma-separated source addresses")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--pairs", action="store_true",
                        help="SOURCE:SPORT entries, one connection per interval in turn")
    args = parser.parse_args()
    sources = args.sources.split(",")
    pairs = [(source, int(sport)) for source, _, sport in
             (entry.rpartition(":") for entry in sources)] if args.pairs else None
    busy = set()  # --pairs: indexes whose connection is still pending
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    selector = selectors.DefaultSelector()
    pending = {}  # socket -> Probe
    lines = []
    out = open(args.out, "a")
    began = time.monotonic()
    end = began + args.duration
    next_round, next_flush, rounds = began, began + 0.5, 0
    cursor = 0  # --pairs: the pair whose turn is next

    def finish(probe, outcome):
        selector.unregister(probe.sock)
        probe.sock.close()
        del pending[probe.sock]
        busy.discard(probe.index)
        lines.append("%.3f %d %s\n" % (probe.started, probe.index, outcome.replace(" ", "_")))

    print("ready", flush=True)
    while not stopping and time.monotonic() < end:
        now = time.monotonic()
        if now >= next_round:
            if pairs is None:
                starts = [(index, source, FIRST_PORT + (rounds * len(sources) + index) % PORTS)
                          for index, source in enumerate(sources)]
            else:
                turn = [(cursor + step) % len(pairs) for step in range(len(pairs))]
                free = [index for index in turn if index not in busy][:1]
                starts = [(index, *pairs[index]) for index in free]
                busy.update(free)
                cursor = free[0] + 1 if free else cursor
            for index, source, sport in starts:
                try:
                    probe = Probe(index, source, sport, args.vip, args.port, args.timeout)
                except OSError as error:
                    lines.append("%.3f %d ERROR:%s\n" % (now, index, type(error).__name__))
                    busy.discard(index)
                    continue
                pending[probe.sock] = probe
                selector.register(probe.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                  probe)
            rounds += 1
            next_round += args.interval
            if next_round < now:  # fell behind (a stalled machine): no burst of rounds
                next_round = now + args.interval
        timeout = max(0.0, min([next_round, next_flush]
                               + [p.deadline for p in pending.values()]) - time.monotonic())
        for key, _ in selector.select(timeout):
            probe = key.data
            outcome = probe.step()
            if outcome is not None:
                finish(probe, outcome)
            elif probe.connected:
                selector.modify(probe.sock, selectors.EVENT_READ, probe)
        now = time.monotonic()
        for probe in [p for p in pending.values() if p.deadline <= now]:
            finish(probe, "ERROR:timeout")
        if now >= next_flush:
            out.writelines(lines)
            out.flush()
            lines.clear()
            next_flush = now + 0.5
    for probe in list(pending.values()):
        finish(probe, "ERROR:stopped")
    out.writelines(lines)
    out.close()


if __name__ == "__main__":
    main()
