"""A TCP responder for data-plane tests (stdlib only), run inside a node namespace.

    responder.py NAME PORT LIFETIME_SECONDS

Listens on 0.0.0.0:PORT; for every connection it sends NAME + "\\n" and closes
first, so the TIME_WAIT state stays on this side and the client may reuse the
same source address and port at once.  Prints "ready" once listening and
"accepted SRC:SPORT" per connection (the harness reads both from its log),
and exits by itself after LIFETIME_SECONDS so a lost process cannot linger.
"""

import socket
import sys
import time


def main():
    name, port, lifetime = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    deadline = time.monotonic() + lifetime
    answer = (name + "\n").encode()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1024)
    server.settimeout(1.0)  # wake up now and then to honour the deadline
    print("ready", flush=True)
    while time.monotonic() < deadline:
        try:
            conn, (peer, peer_port) = server.accept()
        except socket.timeout:
            continue
        # Logged before answering: once the client holds the answer, the log
        # already shows who accepted the connection (no race for the reader).
        print("accepted %s:%d" % (peer, peer_port), flush=True)
        with conn:
            conn.settimeout(2.0)
            try:
                conn.sendall(answer)
            except OSError as error:  # the client gave up: log it, keep serving
                print("send-error %s:%d %s" % (peer, peer_port, error), flush=True)
    print("lifetime over", flush=True)


if __name__ == "__main__":
    main()
