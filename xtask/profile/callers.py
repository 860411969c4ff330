import sys, collections
log, target, limit = sys.argv[1], int(sys.argv[2],16), int(sys.argv[3])
tb = {}; cur=None; last=None; c=collections.Counter(); n=0
for line in open(log, errors="replace"):
    if line.startswith("0x"):
        if cur is not None: cur.append(int(line[2:line.index(":")],16))
    elif line.startswith("IN:"): cur=[]
    elif line.startswith("Trace "):
        f=line[line.index("[")+1:line.index("]")].split("/"); pc=int(f[1],16)
        if cur: tb[pc]=cur
        cur=None
        if pc==target and last is not None: c[tb.get(last,[last])[-1]]+=1
        last=pc; n+=1
        if n>limit: break
for k,v in c.most_common(25): print(hex(k), v)
