"""A TCP client for data-plane tests (stdlib only), run inside the client namespace.

    client.py VIP PORT [--timeout S] [--workers N] [--deadline S]  < pairs.json

stdin: a JSON list of [source_address, source_port].  For each pair it binds
exactly that source (SO_REUSEADDR, so a pair can be reused right after the
previous round), connects to VIP:PORT, reads the answer to EOF and prints one
JSON object {"src:sport": "<node name>" | "ERROR:<reason>"}.

An answer counts only if it is exactly one line: two nodes answering the same
connection would show up as a reset, a timeout or garbled data.  Connections
run on a bounded thread pool; the whole run is bounded by --deadline (pairs
not started in time report ERROR:deadline).
"""

import argparse
import concurrent.futures
import json
import socket
import sys
import time


def probe(vip, port, source, sport, timeout, deadline):
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
        sock.close()
    text = data.decode("utf-8", "replace")
    if text.count("\n") != 1 or not text.endswith("\n") or not text.strip():
        return "ERROR:garbled:%r" % text
    return text.strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("vip")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    pairs = [(str(source), int(sport)) for source, sport in json.load(sys.stdin)]
    deadline = time.monotonic() + args.deadline
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = {"%s:%d" % pair: pool.submit(probe, args.vip, args.port, pair[0], pair[1],
                                                args.timeout, deadline)
                   for pair in pairs}
        answers = {key: future.result() for key, future in futures.items()}
    json.dump(answers, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
