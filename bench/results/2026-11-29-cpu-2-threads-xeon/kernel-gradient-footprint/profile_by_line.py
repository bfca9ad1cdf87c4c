import subprocess,collections,sys
base=int(sys.argv[1],16)
rows=[l.split() for l in open('/tmp/ips.txt')]
cat=collections.Counter()
offs=[hex(int(a,16)-base) for c,a in rows]
out=subprocess.run(['addr2line','-e',sys.argv[2],'-i','-a']+offs,capture_output=True,text=True).stdout.splitlines()
chains={};cur=None
for l in out:
    if l.startswith('0x'): cur=int(l,16); chains[cur]=[]
    else: chains[cur].append(l.split('/')[-1].split(' ')[0])
for (c,a),o in zip(rows,offs):
    chain=chains[int(o,16)]
    key='other'
    for pref in ('gemm.rs','upsampled_winograd.rs','winograd.rs','conv.rs','passes.rs'):
        hits=[l for l in chain if l.startswith(pref)]
        if hits: key=hits[0];break
    cat[key]+=int(c)
tot=sum(cat.values())
for k,v in cat.most_common(20): print(f"{v:6d} {100*v/tot:5.1f}% {k}")
