"""Long-lived TCP connections for data-plane tests (stdlib only), run inside the client namespace.

    holder.py VIP PORT [--timeout S] [--lifetime S]

Answers each command line on stdin with one JSON line on stdout:

``[[source, sport], ...]``
    opens one connection per pair (bound to exactly that source) to VIP:PORT
    and reads its greeting, the responder's node name (``responder.py
    --hold``): ``{"src:sport": "<node>" | "ERROR:<kind>"}``
``ping``
    sends a line on every connection still open and reads the answer, in the
    same form.  A connection that failed is closed and not pinged again.

<kind> tells how a connection broke: "reset" (the peer's TCP answered with a
RST), "timeout" (no answer within --timeout), "closed" (EOF) or the
exception's name.  EOF on stdin, or the end of --lifetime, closes everything.
"""

import argparse
import concurrent.futures
import json
import select
import socket
import sys
import time


class Held:
    def __init__(self, source, sport, timeout):
        self.sock = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.settimeout(timeout)
        self.sock.bind((source, sport))
        self.reader = self.sock.makefile("rb")

    def answer(self, send=None):
        """The next line from the server (after sending ``send``), or ERROR:<kind>."""
        try:
            if send is not None:
                self.sock.sendall(send)
            line = self.reader.readline(256)
        except ConnectionResetError:
            return self.fail("reset")
        except socket.timeout:
            return self.fail("timeout")
        except OSError as error:
            return self.fail(type(error).__name__)
        if not line.endswith(b"\n"):
            return self.fail("closed")
        return line.decode("utf-8", "replace").strip()

    def fail(self, kind):
        self.close()
        return "ERROR:" + kind

    def close(self):
        self.reader.close()
        self.sock.close()
        self.sock = None


def open_one(vip, port, source, sport, timeout):
    held = Held(source, sport, timeout)
    try:
        held.sock.connect((vip, port))
    except OSError as error:
        return held, held.fail("connect:%s" % type(error).__name__)
    return held, held.answer()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("vip")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime
    held = {}  # "src:sport" -> Held
    # Every connection waits at most --timeout at once: a round costs ~timeout, not N x.
    with concurrent.futures.ThreadPoolExecutor(max_workers=256) as pool:
        while select.select([sys.stdin], [], [], max(0.0, deadline - time.monotonic()))[0]:
            command = sys.stdin.readline()
            if not command:
                break
            if command.strip() == "ping":
                live = {key: h for key, h in held.items() if h.sock is not None}
                futures = {key: pool.submit(h.answer, b"ping\n") for key, h in live.items()}
                answers = {key: future.result() for key, future in futures.items()}
            else:
                pairs = [(str(source), int(sport)) for source, sport in json.loads(command)]
                futures = {"%s:%d" % pair: pool.submit(open_one, args.vip, args.port, *pair,
                                                       args.timeout) for pair in pairs}
                answers = {}
                for key, future in futures.items():
                    held[key], answers[key] = future.result()
            json.dump(answers, sys.stdout, sort_keys=True)
            sys.stdout.write("\n")
            sys.stdout.flush()
    for h in held.values():
        if h.sock is not None:
            h.close()


if __name__ == "__main__":
    main()
