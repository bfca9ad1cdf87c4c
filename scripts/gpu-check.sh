#!/usr/bin/env bash
# One command to validate whorl on a GPU machine. It runs the GPU tests, a short training run on
# the GPU in TF32, BF16 and FP32 compared with the same run on the CPU, the benchmarks in the
# three precisions (TF32 once more with Hopper's warpgroup tiles among the candidates), when PyTorch
# is importable, the PyTorch baseline (FP32, TF32 and BF16 autocast; in FP32 and TF32 also
# cuDNN on each convolution pass, which compare.md sets beside whorl's), when compute-sanitizer
# is there, a tiny training run under its memcheck (TF32, FP32) and racecheck (TF32) and, when
# Nsight Compute reads the GPU's counters, one profile of each convolution kernel and launch
# shape of the benchmark in each precision; it writes report.md and report.json under
# bench/results/DATE-DEVICE/.
#
#   scripts/gpu-check.sh                 build here (needs Rust) and check
#   scripts/gpu-check.sh --build DIR     build the release binary and the GPU test binary, for a
#                                        GPU machine without Rust (no GPU needed), stripped and
#                                        packed into DIR/whorl-binaries.tar.gz (about 20 MB: each
#                                        binary embeds the PTX of every kernel for two targets,
#                                        80 MB unpacked)
#   scripts/gpu-check.sh --bin DIR       check with the binaries in DIR (whorl and gpu-tests, or
#                                        that archive of them; needs only the CUDA driver and
#                                        python3; run from the repository root)
#
# Every stage runs even when one before it fails, so one report shows everything; the exit
# status is 0 only when the GPU tests pass, the GPU loss curves agree with the CPU's (within
# 1e-2 in TF32 and FP32, 3e-2 in BF16, with 3 fewer significant bits), the benchmarks ran and
# compute-sanitizer found nothing. GPU_CHECK_RESULTS names another folder for the results
# (tests/scripts.rs uses it); GPU_CHECK_SANITIZER_SECONDS bounds each sanitizer run (default 45)
# and GPU_CHECK_PROFILE_SECONDS each precision's profiling run (default 150); GPU_CHECK_SECONDS
# (none by default) the whole check, report included.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
    source scripts/nvrtc-env.sh
    cargo build --release
    cargo test --release --no-run --test gpu --message-format=json \
        | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])' | tail -n 1
}

# What --build writes and --bin unpacks: the two binaries, stripped.
archive=whorl-binaries.tar.gz

case "${1:-}" in
    --build)
        dir="${2:?--build needs a folder}"
        mkdir -p "$dir"
        tests="$(build)"
        staging="$(mktemp -d)"
        trap 'rm -rf "$staging"' EXIT
        cp target/release/whorl "$staging/whorl"
        cp "$tests" "$staging/gpu-tests"
        strip "$staging/whorl" "$staging/gpu-tests"
        tar -czf "$dir/$archive" -C "$staging" whorl gpu-tests
        echo "binaries in $dir/$archive ($(du -h "$dir/$archive" | cut -f1)): copy $dir to the GPU machine and run scripts/gpu-check.sh --bin $dir there"
        exit 0
        ;;
    --bin)
        dir="${2:?--bin needs a folder}"
        if [ -f "$dir/$archive" ]; then
            unpacked="$(mktemp -d)"
            trap 'rm -rf "$unpacked"' EXIT
            tar -xzf "$dir/$archive" -C "$unpacked"
            dir="$unpacked"
        fi
        whorl="$dir/whorl"
        gpu_tests="$dir/gpu-tests"
        ;;
    "")
        gpu_tests="$(build)"
        whorl=target/release/whorl
        ;;
    *)
        echo "usage: scripts/gpu-check.sh [--build DIR | --bin DIR]" >&2
        exit 2
        ;;
esac

device="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)"
[ -n "$device" ] || { echo "error: nvidia-smi found no GPU" >&2; exit 1; }
slug="$(echo "$device" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')"
out="${GPU_CHECK_RESULTS:-bench/results}/$(date +%F)-$slug"
mkdir -p "$out"
echo "GPU check on $device -> $out"

# With GPU_CHECK_SECONDS, every stage is cut short in time for the report to be written within
# that many seconds (for a GPU machine that limits how long one command may run); a stage cut
# short is reported as failed, or for the sanitizer and profiler runs as cut short.
deadline=0
if [ "${GPU_CHECK_SECONDS:-0}" -gt 0 ]; then
    deadline=$((SECONDS + GPU_CHECK_SECONDS - 15))
fi

# Runs a command under timeout: at most $1 seconds, and none past the deadline.
bounded() {
    local seconds=$1
    shift
    if [ "$deadline" -gt 0 ] && [ $((deadline - SECONDS)) -lt "$seconds" ]; then
        seconds=$((deadline - SECONDS))
        [ "$seconds" -ge 1 ] || seconds=1
    fi
    timeout -k 10 "$seconds" "$@"
}
# A stage with no bound of its own: a day.
unbounded=86400

"$whorl" info | tee "$out/info.txt"

echo "== GPU tests"
tests_status=0
# Uncaptured: the tests print what they find (whether the warpgroup tiles give the mma.sync
# tiles' bits, the timed tile choices, why a test was skipped).
bounded $unbounded "$gpu_tests" --ignored --test-threads 1 --nocapture 2>&1 |
    tee "$out/gpu-tests.txt" ||
    tests_status=$?

echo "== training: the same short run on the GPU (TF32, BF16 and FP32) and on the CPU"
export WHORL_CACHE="$out/cache"
train_status=0
for run in cuda-tf32 cuda-bf16 cuda-fp32 cpu-fp32; do
    bounded $unbounded "$whorl" train --device "${run%-*}" --precision "${run#*-}" \
        --synth-fingers 32 --synth-impressions 4 --size 64 --epochs 3 --batch-size 16 \
        --out "$out/train-$run" --quiet 2>&1 | tee "$out/train-$run.txt" || train_status=$?
done
rm -rf "$out/cache"
# The report keeps each run's history and loss curve, not its checkpoints and run-folder lock.
rm -rf "$out"/train-*/checkpoints "$out"/train-*/.lock

echo "== benchmarks"
bench_status=0
for precision in fp32 tf32 bf16; do
    bounded $unbounded "$whorl" bench --device cuda --precision "$precision" \
        --json "$out/bench-whorl-$precision.json" 2>&1 | tee "$out/bench-whorl-$precision.md" ||
        bench_status=$?
done
# Hopper's warpgroup tiles (wgmma), timed beside the others: not used in training until checked.
bounded $unbounded "$whorl" bench --device cuda --precision tf32 --warpgroup-tiles \
    --json "$out/bench-whorl-tf32-warpgroup.json" \
    2>&1 | tee "$out/bench-whorl-tf32-warpgroup.md" || bench_status=$?
if [ -f bench/torch_baseline.py ] && python3 -c 'import torch' 2>/dev/null; then
    bounded $unbounded python3 bench/torch_baseline.py --device cuda \
        --json "$out/bench-torch.json" 2>&1 | tee "$out/bench-torch.md" || bench_status=$?
else
    echo "no PyTorch baseline run (torch is not importable)" | tee "$out/bench-torch.md"
fi
for pair in "fp32 bench-torch.json" "tf32 bench-torch-tf32.json" "bf16 bench-torch-bf16.json"; do
    whorl_json="$out/bench-whorl-${pair% *}.json" torch_json="$out/${pair#* }"
    if [ -f "$whorl_json" ] && [ -f "$torch_json" ]; then
        "$whorl" compare "$whorl_json" "$torch_json" | tee -a "$out/compare.md"
    fi
done

echo "== compute-sanitizer: memcheck in TF32 and FP32, racecheck in TF32"
# Every kernel a training step launches, under NVIDIA's checker: out-of-bounds and misaligned
# accesses (memcheck) and shared-memory races (racecheck), on one epoch of a tiny synthetic set
# so that each run takes seconds under the tool. A run that finds an error fails the check; one
# cut short by GPU_CHECK_SANITIZER_SECONDS (default 45 each) is reported, not failed.
sanitizer_status="not run (compute-sanitizer is not on PATH)"
sanitizer_errors=0
if command -v compute-sanitizer >/dev/null; then
    sanitizer_status=""
    export WHORL_CACHE="$out/cache"
    for check in memcheck-tf32 memcheck-fp32 racecheck-tf32; do
        check_status=0
        bounded "${GPU_CHECK_SANITIZER_SECONDS:-45}" compute-sanitizer --tool "${check%-*}" \
            --error-exitcode 99 "$whorl" train --device cuda --precision "${check#*-}" \
            --synth-fingers 4 --synth-impressions 2 --size 32 --epochs 1 --batch-size 4 \
            --out "$out/sanitizer-run" --overwrite --quiet >"$out/sanitizer-$check.txt" 2>&1 ||
            check_status=$?
        case "$check_status" in
            0) result="clean" ;;
            99) result="ERRORS" sanitizer_errors=1 ;;
            124 | 137) result="cut short" ;;
            *) result="FAILED (status $check_status)" sanitizer_errors=1 ;;
        esac
        sanitizer_status="$sanitizer_status${sanitizer_status:+, }$check $result"
    done
    rm -rf "$out/cache" "$out/sanitizer-run"
fi
echo "compute-sanitizer: $sanitizer_status"

echo "== kernel profiles (Nsight Compute)"
# Each convolution kernel's first launch of each shape (grid, block, shared memory) in one
# benchmark run per precision: throughput against the GPU's peaks, occupancy, where warps wait
# and what the memory system did. The clocks are left alone, as the benchmark's are. A profile
# is evidence for the next change, not a pass or fail: a failed or cut-short run is reported.
profile_status="not run (ncu is not on PATH)"
if command -v ncu >/dev/null; then
    profile_status="ran"
    for precision in fp32 tf32; do
        warpgroup_tiles=$([ "$precision" = tf32 ] && echo --warpgroup-tiles || true)
        bounded "${GPU_CHECK_PROFILE_SECONDS:-150}" ncu --clock-control none \
            --kernel-name regex:'^conv2d_' --filter-mode per-launch-config --launch-count 1 \
            --section SpeedOfLight --section LaunchStats --section Occupancy \
            --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
            --section WarpStateStats --section SchedulerStats \
            "$whorl" bench --device cuda --precision "$precision" --repeats 1 $warpgroup_tiles \
            >"$out/ncu-$precision.txt" 2>&1 || profile_status="FAILED or cut short (ncu-*.txt)"
    done
fi
echo "kernel profiles: $profile_status"

python3 - "$out" "$device" "$tests_status" "$train_status" "$bench_status" "$profile_status" \
    "$sanitizer_status" "$sanitizer_errors" <<'PY'
import csv, json, os, sys
out, device = sys.argv[1], sys.argv[2]
tests_status, train_status, bench_status = map(int, sys.argv[3:6])
profile_status, sanitizer_status = sys.argv[6], sys.argv[7]
sanitizer_clean = sys.argv[8] == "0"
def history(name):
    path = os.path.join(out, f"train-{name}", "history.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))
cpu = history("cpu-fp32")
training, rows, agree = {}, [], train_status == 0
tolerances = {"fp32": 1e-2, "tf32": 1e-2, "bf16": 3e-2}
for precision, tolerance in tolerances.items():
    gpu, worst = history(f"cuda-{precision}"), 0.0
    for g, c in zip(gpu, cpu):
        for key in ("train_loss", "val_loss"):
            a, b = float(g[key]), float(c[key])
            worst = max(worst, abs(a - b) / abs(b))
        rows.append((precision.upper(), g["epoch"], g["train_loss"], c["train_loss"], g["val_loss"], c["val_loss"], g["seconds"], c["seconds"]))
    ok = len(gpu) == len(cpu) > 0 and worst < tolerance
    agree = agree and ok
    training[precision] = {"worst_relative_difference": worst, "tolerance": tolerance, "agree": ok}
report = {
    "device": device,
    "gpu_tests_passed": tests_status == 0,
    "benchmarks_ran": bench_status == 0,
    "kernel_profiles": profile_status,
    "compute_sanitizer": {"runs": sanitizer_status, "clean": sanitizer_clean},
    "training": {"epochs": rows, **training},
}
for name in ("bench-whorl-fp32.json", "bench-whorl-tf32.json", "bench-whorl-bf16.json", "bench-torch.json", "bench-torch-tf32.json", "bench-torch-bf16.json"):
    path = os.path.join(out, name)
    if os.path.exists(path):
        report[name[:-5]] = json.load(open(path))
json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=2)
with open(os.path.join(out, "report.md"), "w") as f:
    f.write(f"# whorl GPU check: {device}\n\n")
    f.write("```\n" + open(os.path.join(out, "info.txt")).read() + "```\n\n")
    f.write(f"GPU tests (`gpu-tests --ignored`): {'passed' if tests_status == 0 else 'FAILED'} (gpu-tests.txt)\n\n")
    f.write(f"compute-sanitizer (sanitizer-*.txt): {sanitizer_status}\n\n")
    f.write(f"Kernel profiles (Nsight Compute, ncu-fp32.txt and ncu-tf32.txt): {profile_status}\n\n")
    f.write("| GPU precision | epoch | train loss GPU | train loss CPU | val loss GPU | val loss CPU | s GPU | s CPU |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
    for precision, t in training.items():
        f.write(f"\n{precision.upper()}: worst relative difference from the CPU's curve {t['worst_relative_difference']:.2e} ({'agree' if t['agree'] else 'DISAGREE'} within {t['tolerance']:g})")
    if train_status != 0:
        f.write(" — a training run FAILED (train-*.txt)")
    f.write("\n\n")
    for name in ("bench-whorl-fp32.md", "bench-whorl-tf32.md", "bench-whorl-tf32-warpgroup.md", "bench-whorl-bf16.md", "bench-torch.md", "compare.md"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            f.write(f"## {name[:-3]}\n\n" + open(path).read() + "\n")
print(open(os.path.join(out, "report.md")).read())
sys.exit(0 if tests_status == 0 and agree and bench_status == 0 and sanitizer_clean else 1)
PY
