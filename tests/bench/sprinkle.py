"""Send one UDP packet from each of N random sources to the VIP, as frames to the
cluster MAC on a given interface (the benchmark's wire), for the evenness count.
Bounded: exactly N frames, then it exits."""

import random
import socket
import struct
import sys

dev, mac, vip, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
random.seed(7)
dst_mac = bytes(int(x, 16) for x in mac.split(":"))
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
    sock.bind((dev, 0))
    src_mac = sock.getsockname()[4]
    for _ in range(count):
        src = struct.pack("!I", random.randrange(0x0B000000, 0xDF000000))  # unicast range
        udp = struct.pack("!HHHH", random.randrange(1024, 65536), 80, 8, 0)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, src,
                             socket.inet_aton(vip))
        checksum = sum(struct.unpack("!10H", header))
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
        checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
        header = header[:10] + struct.pack("!H", checksum) + header[12:]
        sock.send(dst_mac + src_mac + b"\x08\x00" + header + udp)
