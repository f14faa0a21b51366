"""A TCP client for data-plane tests (stdlib only), run inside the client namespace.

    client.py VIP PORT [--timeout S] [--workers N] [--deadline S]  < pairs.json
    client.py VIP PORT --every S --for S [--timeout S] [--workers N]  < pairs.json

stdin: a JSON list of [source_address, source_port].  For each pair it binds
exactly that source (SO_REUSEADDR, so a pair can be reused right after the
previous round), connects to VIP:PORT, reads the answer to EOF and prints one
JSON object {"src:sport": "<node name>" | "ERROR:<reason>"}.

An answer counts only if it is exactly one line: two nodes answering the same
connection would show up as a reset, a timeout or garbled data.  Connections
run on a bounded thread pool; the whole run is bounded by --deadline (pairs
not started in time report ERROR:deadline).

With --every, it repeats the round every S seconds (a round that takes
longer starts the next at once) for --for seconds, and prints one line per
round, {"t": <CLOCK_MONOTONIC at the round's start>, "answers": {...}}: the
clock is the kernel's, the same in every namespace, so the caller can line
the rounds up with what it did meanwhile.  It also ends when its parent
does (the caller's watcher died without stopping it).
"""

import argparse
import concurrent.futures
import json
import os
import socket
import struct
import sys
import time

# SO_LINGER on, 0 s: close() resets instead of leaving the pair in TIME_WAIT.
ABORTIVE_CLOSE = struct.pack("ii", 1, 0)


def probe(vip, port, source, sport, timeout, deadline, abortive=False):
    if time.monotonic() > deadline:
        return "ERROR:deadline"
    sock = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(timeout)
        sock.bind((source, sport))
        sock.connect((vip, port))
        data = b""
        while len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    except OSError as error:
        return "ERROR:%s:%s" % (type(error).__name__, error)
    finally:
        if abortive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORTIVE_CLOSE)
        sock.close()
    text = data.decode("utf-8", "replace")
    if text.count("\n") != 1 or not text.endswith("\n") or not text.strip():
        return "ERROR:garbled:%r" % text
    return text.strip()


def one_round(args, pairs, deadline, pool, abortive=False):
    futures = {"%s:%d" % pair: pool.submit(probe, args.vip, args.port, pair[0], pair[1],
                                            args.timeout, deadline, abortive)
               for pair in pairs}
    return {key: future.result() for key, future in futures.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("vip")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--every", type=float, help="repeat the round every S seconds")
    parser.add_argument("--for", dest="duration", type=float, default=60.0,
                        help="with --every: stop after S seconds")
    args = parser.parse_args()
    pairs = [(str(source), int(sport)) for source, sport in json.load(sys.stdin)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        if args.every is None:
            answers = one_round(args, pairs, time.monotonic() + args.deadline, pool)
            json.dump(answers, sys.stdout, sort_keys=True)
            sys.stdout.write("\n")
            return
        parent, end = os.getppid(), time.monotonic() + args.duration
        while time.monotonic() < end and os.getppid() == parent:
            began = time.monotonic()
            # The same pairs every round: a connection this side closed first
            # (an answer late or garbled) must not keep its pair in TIME_WAIT
            # for a minute, where connect() fails with EADDRNOTAVAIL.
            answers = one_round(args, pairs, began + args.every + args.timeout, pool,
                                abortive=True)
            sys.stdout.write(json.dumps({"t": began, "answers": answers}, sort_keys=True) + "\n")
            sys.stdout.flush()
            time.sleep(max(0.0, began + args.every - time.monotonic()))


if __name__ == "__main__":
    main()
