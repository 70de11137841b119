#!/usr/bin/env python3
"""Extract raw BGP messages from a pcap into hex vector files.

Reads a classic pcap (tcpdump -w) directly: no scapy or other dependencies. TCP payloads are
reassembled per direction by sequence number (retransmissions and overlaps are fine; a gap ends
the usable part of that stream), cut into BGP messages by the 16-byte marker + length header, and
written as bgp/tests/vectors/captured/<sender>_<kind>.hex: one message per line in lowercase hex,
preceded by a line `# <sender> <MESSAGE TYPE> <what it carries>`. Identical messages are written
once per file.

Note: the per-file cap (--max-per-file) keeps the earliest messages of each kind.

usage: bgp_capture_extract.py CAPTURE.pcap OUTDIR --peer 10.0.0.1=gobgp --peer 10.0.0.2=bird
       [--session 10.0.1.1=ibgp ...] [--max-per-file N]
"""

import argparse
import ipaddress
import struct
import sys
from collections import defaultdict

MARKER = b"\xff" * 16
MSG_TYPES = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}
AFI = {1: "ipv4", 2: "ipv6"}
SAFI = {1: "unicast", 2: "multicast"}
ATTRS = {
    1: "ORIGIN", 2: "AS_PATH", 3: "NEXT_HOP", 4: "MED", 5: "LOCAL_PREF", 6: "ATOMIC_AGGREGATE",
    7: "AGGREGATOR", 8: "COMMUNITIES", 9: "ORIGINATOR_ID", 10: "CLUSTER_LIST",
    14: "MP_REACH_NLRI", 15: "MP_UNREACH_NLRI", 16: "EXT_COMMUNITIES", 17: "AS4_PATH",
    18: "AS4_AGGREGATOR", 32: "LARGE_COMMUNITIES",
}
CAPS = {
    1: "multiprotocol", 2: "route-refresh", 5: "extended-nexthop", 6: "extended-message",
    64: "graceful-restart", 65: "4-octet-as", 69: "add-path", 70: "enhanced-route-refresh",
    71: "long-lived-gr", 73: "fqdn", 128: "route-refresh-cisco",
}
NOTIF = {
    (1, 0): "message header error", (2, 0): "OPEN message error", (2, 2): "bad peer AS",
    (2, 3): "bad BGP identifier", (2, 6): "unacceptable hold time", (3, 0): "UPDATE message error",
    (4, 0): "hold timer expired", (5, 0): "FSM error", (6, 2): "cease/administrative shutdown",
    (6, 3): "cease/peer de-configured", (6, 4): "cease/administrative reset",
    (6, 5): "cease/connection rejected", (6, 7): "cease/connection collision resolution",
    (6, 6): "cease/other configuration change", (6, 9): "cease/hard reset",
}


def read_pcap(path):
    """Yields (timestamp, ip_packet_bytes) for each captured frame."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        sys.exit(f"{path}: not a classic pcap file (pcapng is not supported; use tcpdump -w)")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(end + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(end + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ts = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:  # Ethernet, possibly with one VLAN tag
            etype = struct.unpack("!H", frame[12:14])[0]
            payload = frame[14:]
            if etype == 0x8100:
                etype = struct.unpack("!H", frame[16:18])[0]
                payload = frame[18:]
        elif linktype == 113:  # Linux cooked (tcpdump -i any)
            etype = struct.unpack("!H", frame[14:16])[0]
            payload = frame[16:]
        elif linktype == 276:  # Linux cooked v2
            etype = struct.unpack("!H", frame[0:2])[0]
            payload = frame[20:]
        elif linktype in (101, 12):  # raw IP
            etype = 0x0800 if frame[0] >> 4 == 4 else 0x86DD
            payload = frame
        else:
            sys.exit(f"{path}: unsupported link type {linktype}")
        if etype in (0x0800, 0x86DD):
            yield ts, payload


def parse_tcp(ip):
    """Returns (src, sport, dst, dport, seq, flags, payload) or None if not TCP."""
    ver = ip[0] >> 4
    if ver == 4:
        ihl = (ip[0] & 0xF) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        if ip[9] != 6:
            return None
        src, dst = ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20])
        seg = ip[ihl:total]
    elif ver == 6:
        plen = struct.unpack("!H", ip[4:6])[0]
        if ip[6] != 6:  # extension headers do not occur on our BGP sessions
            return None
        src, dst = ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
        seg = ip[40:40 + plen]
    else:
        return None
    sport, dport, seq = struct.unpack("!HHI", seg[:8])
    doff = (seg[12] >> 4) * 4
    flags = seg[13]
    return str(src), sport, str(dst), dport, seq, flags, seg[doff:]


class Stream:
    """One direction of one TCP connection, reassembled by sequence number."""

    def __init__(self, isn):
        self.isn = isn
        self.segments = {}  # relative offset -> (timestamp, bytes)

    def add(self, ts, seq, payload):
        rel = (seq - self.isn - 1) % (1 << 32)
        if payload and rel < (1 << 31):
            old = self.segments.get(rel)
            if old is None or len(old[1]) < len(payload):
                self.segments[rel] = (ts, payload)

    def bytes_with_times(self):
        """Contiguous stream from offset 0, plus (offset, timestamp) of each segment start."""
        buf = bytearray()
        times = []
        for rel in sorted(self.segments):
            ts, data = self.segments[rel]
            if rel > len(buf):
                break  # gap: the capture lost data, stop here
            new = data[len(buf) - rel:]
            if new:
                times.append((len(buf), ts))
                buf += new
        return bytes(buf), times


def streams_from_pcap(path):
    streams = []  # (key, Stream)
    current = {}
    for ts, ip in read_pcap(path):
        t = parse_tcp(ip)
        if t is None:
            continue
        src, sport, dst, dport, seq, flags, payload = t
        if 179 not in (sport, dport):
            continue
        key = (src, sport, dst, dport)
        if flags & 0x02:  # SYN: a new connection in this direction
            s = Stream(seq)
            current[key] = s
            streams.append((key, s))
            continue
        s = current.get(key)
        if s is not None:
            s.add(ts, seq, payload)
    return streams


def prefixes(data, afi):
    out = []
    i = 0
    size = 4 if afi == 1 else 16
    while i < len(data):
        plen = data[i]
        n = (plen + 7) // 8
        raw = data[i + 1:i + 1 + n] + bytes(size - n)
        addr = ipaddress.ip_address(raw[:size])
        out.append(f"{addr}/{plen}")
        i += 1 + n
    return out


def describe_open(body):
    ver, my_as, hold = struct.unpack("!BHH", body[:5])
    bgp_id = ipaddress.ip_address(body[5:9])
    optlen = body[9]
    opts = body[10:10 + optlen]
    caps = []
    i = 0
    while i + 2 <= len(opts):
        ptype, plen = opts[i], opts[i + 1]
        pval = opts[i + 2:i + 2 + plen]
        i += 2 + plen
        if ptype != 2:
            continue
        j = 0
        while j + 2 <= len(pval):
            code, clen = pval[j], pval[j + 1]
            cval = pval[j + 2:j + 2 + clen]
            j += 2 + clen
            name = CAPS.get(code, f"cap{code}")
            if code == 1 and clen == 4:
                afi, safi = struct.unpack("!HxB", cval)
                name += f"({AFI.get(afi, afi)}/{SAFI.get(safi, safi)})"
            elif code == 65 and clen == 4:
                name += f"({struct.unpack('!I', cval)[0]})"
            elif code == 64 and clen >= 2:
                flags_time = struct.unpack("!H", cval[:2])[0]
                fams = [f"{AFI.get(struct.unpack('!H', cval[k:k+2])[0], '?')}"
                        + ("+F" if cval[k + 3] & 0x80 else "")
                        for k in range(2, clen - 3, 4)]
                r = ",R" if flags_time & 0x8000 else ""
                n = ",N" if flags_time & 0x4000 else ""
                name += f"(time={flags_time & 0xFFF}{r}{n};{' '.join(fams)})"
            elif code == 5:
                name += "(" + " ".join(
                    f"{AFI.get(struct.unpack('!H', cval[k:k+2])[0])}"
                    f"-nh-{AFI.get(struct.unpack('!H', cval[k+4:k+6])[0])}"
                    for k in range(0, clen - 5, 6)) + ")"
            caps.append(name)
    return f"version={ver} as={my_as} hold={hold} id={bgp_id} caps: {' '.join(caps)}"


def describe_update(body):
    """Returns (kind, description)."""
    wlen = struct.unpack("!H", body[:2])[0]
    withdrawn = prefixes(body[2:2 + wlen], 1)
    alen = struct.unpack("!H", body[2 + wlen:4 + wlen])[0]
    attrs = body[4 + wlen:4 + wlen + alen]
    nlri = prefixes(body[4 + wlen + alen:], 1)
    names = []
    reach = unreach = None
    i = 0
    while i < len(attrs):
        flags, code = attrs[i], attrs[i + 1]
        if flags & 0x10:
            ln = struct.unpack("!H", attrs[i + 2:i + 4])[0]
            val = attrs[i + 4:i + 4 + ln]
            i += 4 + ln
        else:
            ln = attrs[i + 2]
            val = attrs[i + 3:i + 3 + ln]
            i += 3 + ln
        names.append(ATTRS.get(code, f"attr{code}"))
        if code == 14:
            afi = struct.unpack("!H", val[:2])[0]
            nhl = val[3]
            nh = val[4:4 + nhl]
            size = 4 if len(nh) in (4, 8) else 16
            nhs = [str(ipaddress.ip_address(nh[k:k + size])) for k in range(0, nhl, size)]
            reach = (afi, nhs, prefixes(val[5 + nhl:], afi))
        elif code == 15:
            afi = struct.unpack("!H", val[:2])[0]
            unreach = (afi, prefixes(val[3:], afi))
    if not withdrawn and not attrs and not nlri:
        return "eor", "End-of-RIB ipv4/unicast (empty UPDATE)"
    if unreach and names == ["MP_UNREACH_NLRI"] and not unreach[1] and not nlri and not withdrawn:
        return "eor", f"End-of-RIB {AFI.get(unreach[0])}/unicast (empty MP_UNREACH_NLRI)"
    if reach:
        return (f"update_{AFI.get(reach[0])[-2:]}",
                f"announce {' '.join(reach[2])} next-hop {' '.join(reach[1])} "
                f"attrs: {' '.join(names)}")
    if unreach:
        return f"withdraw_{AFI.get(unreach[0])[-2:]}", f"withdraw {' '.join(unreach[1])} (MP_UNREACH_NLRI)"
    if nlri:
        extra = f" withdraw {' '.join(withdrawn)}" if withdrawn else ""
        return "update_v4", f"announce {' '.join(nlri)}{extra} attrs: {' '.join(names)}"
    return "withdraw_v4", f"withdraw {' '.join(withdrawn)} (withdrawn routes field)"


def describe(msg):
    mtype = msg[18]
    body = msg[19:]
    name = MSG_TYPES.get(mtype, f"type{mtype}")
    if mtype == 1:
        return "open", name, describe_open(body)
    if mtype == 2:
        kind, what = describe_update(body)
        return kind, name, what
    if mtype == 3:
        code, sub = body[0], body[1]
        what = NOTIF.get((code, sub), NOTIF.get((code, 0), "?"))
        extra = f" data={body[2:].hex()}" if len(body) > 2 else ""
        return "notification", name, f"code={code} subcode={sub} ({what}){extra}"
    if mtype == 4:
        return "keepalive", name, "(no body)"
    if mtype == 5:
        afi, sub, safi = struct.unpack("!HBB", body[:4])
        kinds = {0: "request", 1: "BoRR", 2: "EoRR"}
        return "route_refresh", name, f"{AFI.get(afi, afi)}/{SAFI.get(safi, safi)} {kinds.get(sub, sub)}"
    return f"type{mtype}", name, "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pcap")
    ap.add_argument("outdir")
    ap.add_argument("--peer", action="append", default=[], help="ADDR=NAME of a sender")
    ap.add_argument("--session", action="append", default=[], help="ADDR=LABEL: label messages sent from ADDR")
    ap.add_argument("--max-per-file", type=int, default=8)
    args = ap.parse_args()
    peers = dict(p.split("=", 1) for p in args.peer)
    labels = dict(p.split("=", 1) for p in args.session)

    msgs = []  # (timestamp, sender, label, raw)
    for (src, _sport, dst, _dport), s in streams_from_pcap(args.pcap):
        data, times = s.bytes_with_times()
        i = 0
        while i + 19 <= len(data):
            if data[i:i + 16] != MARKER:
                print(f"warning: lost framing in {src}->{dst} at {i}", file=sys.stderr)
                break
            ln = struct.unpack("!H", data[i + 16:i + 18])[0]
            if ln < 19 or i + ln > len(data):
                break
            ts = max((t for off, t in times if off <= i), default=0.0)
            sender = peers.get(src, src)
            msgs.append((ts, sender, labels.get(src, f"{src}->{dst}"), data[i:i + ln]))
            i += ln
    msgs.sort(key=lambda m: m[0])

    files = defaultdict(list)
    # Per file: an empty UPDATE or a KEEPALIVE is byte-identical whoever sends it, and each
    # sender's file should still have one.
    seen = defaultdict(set)
    for _ts, sender, label, raw in msgs:
        kind, name, what = describe(raw)
        fname = f"{sender}_{kind}.hex"
        if raw in seen[fname] or len(files[fname]) >= args.max_per_file:
            continue
        seen[fname].add(raw)
        files[fname].append(f"# {sender} {name} {what} [{label}]\n{raw.hex()}\n")
    total = 0
    for fname in sorted(files):
        with open(f"{args.outdir}/{fname}", "w") as f:
            f.writelines(files[fname])
        total += len(files[fname])
        print(f"{fname}: {len(files[fname])} messages")
    print(f"total: {total} messages from {len(msgs)} captured", file=sys.stderr)


if __name__ == "__main__":
    main()
