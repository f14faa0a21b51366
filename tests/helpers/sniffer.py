"""Counts the frames announcing an address on a segment (stdlib only), run inside
the client namespace.

    sniffer.py NIC ADDRESS SECONDS

Reads every frame NIC receives through an AF_PACKET socket and prints one
line per announcement of ADDRESS, with the time it arrived on
time.monotonic()'s clock (CLOCK_MONOTONIC, the same in every network
namespace, so the harness can compare it with its own):

    arp OPCODE SENDER_MAC TIME     a gratuitous ARP (sender and target IP ADDRESS)
    na TARGET_LL_MAC TIME          an unsolicited Neighbour Advertisement for ADDRESS

Prints "ready" once the socket is bound (frames before that are not seen)
and exits by itself after SECONDS, so a lost process cannot linger.
"""

import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ND_NEIGHBOR_ADVERT = 136


def mac_text(raw):
    return ":".join("%02x" % b for b in raw)


def announcement(frame, packed):
    """The line for frame if it announces packed (4 or 16 bytes), else None."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_P_ARP and len(packed) == 4 and len(frame) >= 42:
        opcode = struct.unpack("!H", frame[20:22])[0]
        sender_mac, sender_ip, target_ip = frame[22:28], frame[28:32], frame[38:42]
        if sender_ip == packed == target_ip:
            return "arp %d %s" % (opcode, mac_text(sender_mac))
    if ethertype == ETH_P_IPV6 and len(packed) == 16 and len(frame) >= 86:
        next_header, icmp = frame[20], frame[54:]
        if next_header == 58 and icmp[0] == ND_NEIGHBOR_ADVERT and icmp[8:24] == packed:
            # The Target Link-Layer Address option (type 2) follows the target.
            option = icmp[24:32]
            mac = mac_text(option[2:8]) if option[:2] == b"\x02\x01" else "-"
            return "na %s" % mac
    return None


def main():
    nic, address, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    deadline = time.monotonic() + seconds
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((nic, 0))
    print("ready", flush=True)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            frame = sock.recv(65535)
        except socket.timeout:
            break
        line = announcement(frame, packed)
        if line:
            print("%s %.6f" % (line, time.monotonic()), flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
