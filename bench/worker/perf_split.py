#!/usr/bin/python3
"""Where the worker's training time goes: a perf profile split by the code that ran (self time).

    perf record -D 2500 -F 999 -o FILE build-wbench/steptime/moesweep-worker-steptime CONFIG.json --epochs 6
    /usr/bin/python3 bench/worker/perf_split.py FILE

(-D skips the dataset load.) Debian's LibTorch has no symbols, so LibTorch's own kernels are one
bucket; oneDNN's GEMM kernels are JIT code and show up as "[JIT]". The first matching rule wins.
"""
import collections
import subprocess
import sys

# (bucket, match on the symbol, match on the DSO)
RULES = [
    ("GEMMs: oneDNN sgemm (JIT kernels + driver)", (), ("[JIT]", "libdnnl")),
    ("AdamW kernel (FusedAdamW::Step)", ("AdamWKernel",), ()),
    ("gradient-norm kernel (FusedAdamW::GradNorm)", ("SumSquares",), ()),
    ("diversity loss: gradient kernel", ("DiversityGradKernel",), ()),
    ("diversity loss: norm, sum and dot kernels", ("DiversityNormKernel", "DiversitySumKernel", "DiversityDotKernel"), ()),
    ("OpenBLAS", (), ("libopenblas",)),
    ("dropout masks", ("DropoutMask",), ()),
    ("dispatch plan (PlanDispatch, RowExperts)", ("PlanDispatch", "RowExperts"), ()),
    ("kernel: page faults, scheduling, timers", (), ("[kernel",)),
    ("libc: malloc/free, memset, memcpy", (), ("libc.so", "libc-")),
    ("LibTorch: elementwise/reduction kernels, autograd, dispatcher", (), ("libtorch", "libc10", "libgomp", "libsleef")),
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = subprocess.run(["perf", "report", "-i", sys.argv[1], "--no-children", "--sort", "dso,sym", "-g", "none",
                          "--stdio", "--percent-limit", "0"], capture_output=True, text=True, errors="replace").stdout
    buckets = collections.Counter()
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line.split()[0]:
            continue
        pct = float(line.split()[0].rstrip("%"))
        rest = line.split(None, 1)[1]
        bucket = "other"
        for name, syms, dsos in RULES:
            if any(s in rest for s in syms) or any(d in rest for d in dsos):
                bucket = name
                break
        buckets[bucket] += pct
    total = sum(buckets.values())
    for name, pct in buckets.most_common():
        print(f"{100 * pct / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
