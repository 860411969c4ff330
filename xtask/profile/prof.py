#!/usr/bin/env python3
"""Per-function instruction profile of a QEMU `-d exec,nochain,in_asm` log of the bench scenario
(docs/profile-aarch64.md, docs/profile-x86_64.md).

usage: prof.py ARCH TRACE ELF ENTRY [TOP]      ARCH: aarch64 | x86_64

ENTRY (hex) is where the TSM is entered from a lower-privilege context: aarch64 the lower-EL
synchronous vector (`__el2_vectors` + 0x400), x86_64 the instruction after `vmrun`. The run is
traced with `-dfilter` over the TSM's text and the TVM guest payload only (tracing the host
payload too makes the log ten times larger), so a host call is a segment from one ENTRY to the
next (or to guest code).

A *segment* is a maximal run of TSM code between two runs of lower-privilege code (the host
payload or a TVM guest). Each segment is keyed by where it came from and went to (h = host,
g = guest) and its exact instruction count: the same code path always executes the same
count, so the bench's 256 samples of a call form one group. The most frequent groups are
printed with their per-function split (functions from `llvm-nm -n`, so an inlined callee is
counted in its caller).
"""
import bisect, collections, re, subprocess, sys

arch, log, elf = sys.argv[1], sys.argv[2], sys.argv[3]
entry = int(sys.argv[4], 16)
top = int(sys.argv[5]) if len(sys.argv) > 5 else 12
# With a sixth argument N: also the executed PCs of the segments of exactly N instructions (for
# `llvm-objdump -d` side by side: which lines of an inlined function cost what).
pcs_of = int(sys.argv[6]) if len(sys.argv) > 6 else None

syms = []
for l in subprocess.run(["llvm-nm", "-C", "-n", elf], capture_output=True, text=True).stdout.splitlines():
    p = l.split(" ", 2)
    if len(p) == 3 and p[1] in "tTwW":
        syms.append((int(p[0], 16), re.sub(r"::h[0-9a-f]{16}$", "", p[2])))
addrs = [a for a, _ in syms]


def sym(pc):
    i = bisect.bisect_right(addrs, pc) - 1
    return syms[i][1] if i >= 0 else "?"


def world(pc, flags):
    """'t' (TSM), 'h' (host payload) or 'g' (TVM guest)."""
    if arch == "aarch64":
        if 0x4100_0000 <= pc < 0x4800_0000:
            return "h"
        return "g" if pc < 0x4000_0000 else "t"
    # x86_64: the host and the TVMs are SVM guests (QEMU's HF_GUEST_MASK, bit 21 of hflags).
    if not flags & (1 << 21):
        return "t"
    return "h" if pc >= 0x100_0000 else "g"


tb, cur, per_tb = {}, None, {}
groups = collections.defaultdict(collections.Counter)
count = collections.Counter()
seg, start = collections.Counter(), "b"
seg_pcs, pcs = [], collections.Counter()
for line in open(log, errors="replace"):
    if line.startswith("0x"):
        if cur is not None:
            cur.append(int(line[2:line.index(":")], 16))
    elif line.startswith("IN:"):
        cur = []
    elif line.startswith("Trace "):
        f = line[line.index("[") + 1:line.index("]")].split("/")
        pc, flags = int(f[1], 16), int(f[2], 16)
        if cur:
            tb[(pc, flags)] = cur
        cur = None
        w = world(pc, flags)
        if pc == entry and seg:
            # A host call's segment ends where the next trap enters the TSM.
            key = (start + "h", sum(seg.values()))
            count[key] += 1
            groups[key].update(seg)
            if key[1] == pcs_of:
                pcs.update(seg_pcs)
            seg, start = collections.Counter(), "h"
            seg_pcs = []
        elif pc == entry:
            start = start if start == "g" else "h"
        if w != "t":
            if seg:
                key = (start + w, sum(seg.values()))
                count[key] += 1
                groups[key].update(seg)
                if key[1] == pcs_of:
                    pcs.update(seg_pcs)
            seg, start = collections.Counter(), w
            seg_pcs = []
            continue
        c = per_tb.get((pc, flags))
        if c is None:
            c = per_tb[(pc, flags)] = collections.Counter(sym(p) for p in tb.get((pc, flags), [pc]))
        seg.update(c)
        seg_pcs.extend(tb.get((pc, flags), [pc]))

print("groups: from-to (h host, g guest), instructions per segment, segments")
for key, n in sorted(count.items(), key=lambda kv: -kv[1])[:40]:
    print(f"  {key[0]} {key[1]:7d} x{n}")
for key, n in sorted(count.items(), key=lambda kv: -kv[1])[:top]:
    print(f"== {key[0]} {key[1]} instructions, {n} segments")
    for s, k in groups[key].most_common(25):
        print(f"  {k // n:6d}  {s}")

if pcs_of is not None:
    print(f"== executed PCs of the {pcs_of}-instruction segments (count, pc, function)")
    for pc in sorted(pcs):
        print(f"  {pcs[pc]:7d}  {pc:#x}  {sym(pc)}")
