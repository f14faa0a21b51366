"""A TCP responder for data-plane tests (stdlib only), run inside a node namespace.

    responder.py NAME PORT LIFETIME_SECONDS [--hold] [--bind ADDRESS]

Listens on 0.0.0.0:PORT (--bind ::, IPv6 only: [::]:PORT); for every connection
it sends NAME + "\\n" and closes first, so the TIME_WAIT state stays on this
side and the client may reuse the same source address and port at once. With
--hold it keeps the connection instead and answers NAME + "\\n" to every line
the client sends, until the client closes (long-lived connections, see
holder.py). Prints "ready" once listening and "accepted SRC:SPORT" per
connection (the harness reads both from its log), and exits by itself after
LIFETIME_SECONDS so a lost process cannot linger.
"""

import socket
import sys
import threading
import time


def hold(conn, answer, deadline):
    """--hold: one answer per line received, until the client closes or the lifetime ends."""
    with conn:
        try:
            conn.sendall(answer)
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            for _ in conn.makefile("rb"):
                conn.sendall(answer)
        except OSError:
            pass  # the client went away (or was reset): nothing left to serve


def main():
    name, port, lifetime = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    options = sys.argv[4:]
    held = "--hold" in options
    bind = options[options.index("--bind") + 1] if "--bind" in options else "0.0.0.0"
    deadline = time.monotonic() + lifetime
    answer = (name + "\n").encode()
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # peers print as themselves, never ::ffff:a.b.c.d
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    server.bind((bind, port))
    server.listen(1024)
    server.settimeout(1.0)  # wake up now and then to honour the deadline
    print("ready", flush=True)
    while time.monotonic() < deadline:
        try:
            conn, (peer, peer_port, *_) = server.accept()
        except socket.timeout:
            continue
        # Logged before answering: once the client holds the answer, the log
        # already shows who accepted the connection (no race for the reader).
        print("accepted %s:%d" % (peer, peer_port), flush=True)
        if held:
            threading.Thread(target=hold, args=(conn, answer, deadline), daemon=True).start()
            continue
        with conn:
            conn.settimeout(2.0)
            try:
                conn.sendall(answer)
            except OSError as error:  # the client gave up: log it, keep serving
                print("send-error %s:%d %s" % (peer, peer_port, error), flush=True)
    print("lifetime over", flush=True)


if __name__ == "__main__":
    main()
