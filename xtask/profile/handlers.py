#!/usr/bin/env python3
# Instruction profile of the TSM's host calls from a QEMU `-d exec,nochain,in_asm` log
# (docs/profile-aarch64.md, "Method"; docs/benchmarks.md, "Handlers").
#
# usage: handlers.py TRACE ELF HOST_LO HOST_HI [TOP]   (hex; aarch64: 41000000 48000000,
#                                                       x86_64: 1000000 2000000)
#
# A segment is a maximal run of translation blocks outside the host payload: one host call
# (with whatever guest code a VCPU_RUN runs). Release images are built with fat LTO, so the
# handlers are inlined into the dispatcher and have no symbol of their own: every executed PC
# is resolved with `llvm-addr2line -f -i` (its inline chain), a segment is classed by the first
# handler name any of its PCs has in its chain, and its instructions are reported per
# innermost function and per the frame right below the handler (what the handler called).
# TBs are keyed by QEMU's TB pointer, not their PC: on x86_64 the guest payload and the TSM
# are both linked at 0x20_0000.
import collections, pickle, re, subprocess, sys

log, elf = sys.argv[1], sys.argv[2]
host_lo, host_hi = int(sys.argv[3], 16), int(sys.argv[4], 16)
top = int(sys.argv[5]) if len(sys.argv) > 5 else 20
HANDLERS = ["vdev_create", "vdev_bind", "vdev_continue", "pdev_continue", "communicate", "tvm_destroy", "vcpu_destroy",
            "vcpu_create", "tvm_create", "vdev_unbind", "vdev_destroy", "granule_undelegate",
            "granule_delegate", "vcpu_run"]

# The parsed trace is kept beside it (TRACE.segments): reading a 3 GB log takes minutes.
cache = log + ".segments"
try:
    with open(cache, "rb") as f:
        tbs, segs = pickle.load(f)
except OSError:
    tbs, cur = {}, None
    segs = []          # (list of tb keys executed)
    seg = collections.Counter()
    in_seg = False
    for line in open(log, errors="replace"):
        if line.startswith("0x"):
            if cur is not None:
                cur.append(int(line[2:line.index(":")], 16))
        elif line.startswith("IN:"):
            cur = []
        elif line.startswith("Trace "):
            head, rest = line.split("[", 1)
            ptr = head.split()[2].rstrip(":")
            pc = int(rest.split("/")[1], 16)
            key = (ptr, pc)
            if cur:
                tbs[key] = cur
            cur = None
            if host_lo <= pc < host_hi:
                if in_seg:
                    segs.append(seg)
                    seg, in_seg = collections.Counter(), False
                continue
            in_seg = True
            seg[key] += 1
    if in_seg:
        segs.append(seg)

    with open(cache, "wb") as f:
        pickle.dump((tbs, segs), f)

pcs = sorted({p for k in {k for s in segs for k in s} for p in tbs.get(k, [k[1]])})
out = subprocess.run(["llvm-addr2line", "-f", "-i", "-C", "-e", elf, "--output-style=LLVM"],
                     input="\n".join(hex(p) for p in pcs) + "\n", capture_output=True,
                     text=True).stdout
chains, blocks = {}, out.split("\n\n")
for p, b in zip(pcs, blocks):
    ls = b.strip().splitlines()
    # pairs: function, file:line:col; innermost first
    chains[p] = [(ls[i], ls[i + 1] if i + 1 < len(ls) else "") for i in range(0, len(ls), 2)]


def short(f):
    f = re.sub(r"::h[0-9a-f]{16}$", "", f)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("..", "::"), ("_<", "<")):
        f = f.replace(a, b)
    return f.replace("tsm_core::", "").replace("tsm_hal::", "hal::")


def handler_of(chain):
    for f, _ in chain:
        f = re.sub(r"::h[0-9a-f]{16}$", "", f)
        for h in HANDLERS:
            if f.endswith("::" + h):
                return h
    return None


# Per PC, once: its handler (if any), innermost function, the frame below the handler, line.
info = {}
for p, ch in chains.items():
    ch = ch or [("?", "")]
    idx = next((i for i, (f, _) in enumerate(ch) if handler_of([(f, "")])), None)
    below_f = (short(ch[idx - 1][0]) if idx else
               "(handler)" if idx == 0 else "(outside: " + short(ch[-1][0]) + ")")
    loc = ch[0][1].split(":")
    line = loc[0].split("/")[-1] + ":" + loc[1] if len(loc) > 1 else "?"
    info[p] = (handler_of(ch), short(ch[0][0]), below_f, line)

n, inner, below, line_tot = (collections.Counter(), collections.defaultdict(collections.Counter),
                             collections.defaultdict(collections.Counter),
                             collections.defaultdict(collections.Counter))
for s in segs:
    cls = next((info[p][0] for k in s for p in tbs.get(k, [k[1]])
                if p in info and info[p][0]), "other")
    # A device call in an SPDM session (its messages sealed with AES-GCM) apart from one without.
    if any(info.get(p, (None, ""))[1].startswith("aes::") for k in s for p in tbs.get(k, [k[1]])):
        cls += " (SPDM)"
    n[cls] += 1
    for k, execs in s.items():
        for p in tbs.get(k, [k[1]]):
            _, f, b, line = info.get(p, (None, "?", "?", "?"))
            inner[cls][f] += execs
            below[cls][b] += execs
            line_tot[cls][line] += execs

for c in sorted(n, key=lambda c: (HANDLERS + ["other"]).index(c.split(" ")[0])):
    if not n[c]:
        continue
    t = sum(inner[c].values())
    print(f"== {c}: {n[c]} segments, {t / n[c]:.0f} insns/segment")
    for title, tab in (("innermost function", inner[c]), ("called from the handler", below[c]),
                       ("innermost line", line_tot[c])):
        print(f"  -- by {title}")
        for f, k in tab.most_common(top):
            print(f"  {k / n[c]:9.0f}  {100 * k / t:5.1f}%  {f[:150]}")
