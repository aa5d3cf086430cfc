"""What crosses the bridge between two pods: an AF_PACKET socket on every interface
of the root network namespace (the bridge and the pods' veth ends) keeps the TCP
payload of each IPv4 packet between the two addresses, appended to OUT as
(4-byte big-endian length, bytes) records. `sniff.py A B OUT`; prints `sniffing`
once the socket is open."""

import socket
import struct
import sys

ETH_P_ALL = 0x0003
ETH_P_IP = b"\x08\x00"

a, b, out = sys.argv[1], sys.argv[2], sys.argv[3]
pair = {socket.inet_aton(a), socket.inet_aton(b)}
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
sink = open(out, "ab", buffering=0)
print("sniffing", flush=True)
while True:
    frame = sock.recv(1 << 16)
    if len(frame) < 34 or frame[12:14] != ETH_P_IP:
        continue
    ip = frame[14:]
    if ip[9] != socket.IPPROTO_TCP or {ip[12:16], ip[16:20]} != pair:
        continue
    total = struct.unpack("!H", ip[2:4])[0]
    if 0 < total <= len(ip):
        ip = ip[:total]
    tcp = ip[(ip[0] & 0x0F) * 4 :]
    if len(tcp) < 20:
        continue
    payload = tcp[(tcp[12] >> 4) * 4 :]
    if payload:
        sink.write(struct.pack("!I", len(payload)) + payload)
