#!/usr/bin/env python3
"""Build one large benchmark capture from a folder of real captures.

    bench/make_capture.py SRC_DIR OUT.pcap [TARGET_PACKETS] [MAX_FRAME] [nofrag]

Takes every classic-pcap Ethernet file in SRC_DIR (sorted by name), and
writes their packets into one microsecond pcap, round after round, until at
least TARGET_PACKETS (default 3,160,000) are written. Each file's packets keep
their relative timing (clamped to one hour); files follow each other with a 300 s gap, so flows from
different files or rounds never merge (the gap exceeds the default idle
timeout). With MAX_FRAME, longer frames are left out (to fit a link MTU for
tcpreplay). With "nofrag", untagged IPv4 fragments are left out too (live
capture reassembles them in the kernel, which would make packet counts
differ from what was sent). Only the standard library is used.
"""
import os
import struct
import sys

GAP_US = 300 * 1_000_000


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return None
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian, nanos = "<", False
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian, nanos = ">", False
    elif magic == b"\x4d\x3c\xb2\xa1":
        endian, nanos = "<", True
    elif magic == b"\xa1\xb2\x3c\x4d":
        endian, nanos = ">", True
    else:
        return None
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        return None
    pkts = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, origlen = struct.unpack(endian + "IIII", data[off:off + 16])
        if caplen > 262144 or off + 16 + caplen > len(data):
            break
        us = sec * 1_000_000 + (frac // 1000 if nanos else frac)
        pkts.append((us, origlen, data[off + 16:off + 16 + caplen]))
        off += 16 + caplen
    return pkts


def is_fragment(frame):
    """An untagged IPv4 packet with MF set or a non-zero offset."""
    if len(frame) < 22 or frame[12:14] != b"\x08\x00":
        return False
    flags_off = struct.unpack(">H", frame[20:22])[0]
    return bool(flags_off & 0x3FFF)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    src, out = sys.argv[1], sys.argv[2]
    target = int(sys.argv[3]) if len(sys.argv) > 3 else 3_160_000
    max_frame = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 30
    nofrag = len(sys.argv) > 5 and sys.argv[5] == "nofrag"
    files = []
    for name in sorted(os.listdir(src)):
        if name.endswith(".pcap"):
            p = read_pcap(os.path.join(src, name))
            p = [x for x in (p or []) if len(x[2]) <= max_frame and x[1] <= max_frame]
            if nofrag:
                p = [x for x in p if not is_fragment(x[2])]
            if p:
                files.append(p)
    if not files:
        sys.exit(f"no Ethernet pcap files in {src}")
    written = 0
    clock = 1_600_000_000 * 1_000_000
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        while written < target:
            for pkts in files:
                base = pkts[0][0]
                last = clock
                for us, origlen, data in pkts:
                    # Clamp: a few traces jump by years; keep the timeline compact.
                    t = clock + min(max(0, us - base), 3600 * 1_000_000)
                    last = max(last, t)
                    f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(data), origlen))
                    f.write(data)
                written += len(pkts)
                clock = last + GAP_US
    print(f"{out}: {written} packets from {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
