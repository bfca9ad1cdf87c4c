"""Share of perf samples per source line of whorl's CPU engine, each sample's address resolved
with its inlining chain (perf's own report folds the transforms and the products into one
`pulp` symbol). Usage, with passes.rs built as examples/passes:

    RAYON_NUM_THREADS=1 perf record -e cpu-clock -F 5000 -o p.data \
        target/release/examples/passes filter 4 15
    perf script -i p.data -F ip | sort | uniq -c | awk '{print $1, $2}' > /tmp/ips.txt
    python3 profile_by_line.py BASE target/release/examples/passes

/tmp/ips.txt holds "COUNT ADDRESS" lines. BASE (hex) is the executable's load address minus
its text segment's virtual address rounded down to a page: the start of its r-xp mapping
(`perf script --show-mmap-events`) minus the LOAD segment's VirtAddr that `readelf -lW`
shows for R E, rounded down to 0x1000 (0x73000 for the build profiled here).
"""
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
