#!/usr/bin/env bash
# whorl against PyTorch and Keras/TensorFlow on this machine's CPU: for each batch size given
# (default: 8 32 128) it runs `whorl bench --device cpu`, bench/torch_baseline.py and
# bench/keras_baseline.py at 224x224, then `whorl compare`, into RESULTS_DIR, by default
# bench/results/DATE-cpu-N-threads/ (whorl-bB.json/.md, torch-bB.json, keras-bB.json, compare.md).
# WHORL_ARGS adds flags to whorl's benchmark, e.g. WHORL_ARGS="--winograd-tile 4x4".
# A framework its interpreter cannot import is skipped, and the report says so. TORCH_PYTHON
# and KERAS_PYTHON name the interpreters (default python3), e.g. virtual environments made with
#   python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.15.0
#   python3 -m venv /tmp/keras && /tmp/keras/bin/pip install tensorflow-cpu==2.21.0 keras==3.15.1
set -euo pipefail
cd "$(dirname "$0")/.."

batches=("$@")
[ ${#batches[@]} -gt 0 ] || batches=(8 32 128)
torch_python="${TORCH_PYTHON:-python3}"
keras_python="${KERAS_PYTHON:-python3}"
read -r -a whorl_args <<< "${WHORL_ARGS:-}"

cargo build --release --quiet
whorl=target/release/whorl
out="${RESULTS_DIR:-bench/results/$(date +%F)-cpu-$(nproc)-threads}"
mkdir -p "$out"
compare="$out/compare.md"
echo "# whorl, PyTorch and Keras on $(nproc) CPU threads ($(date +%F))" > "$compare"

for batch in "${batches[@]}"; do
    echo "== batch $batch"
    "$whorl" bench --device cpu "${whorl_args[@]}" --batch-size "$batch" \
        --json "$out/whorl-b$batch.json" \
        | tee "$out/whorl-b$batch.md"
    echo -e "\n## batch $batch\n" >> "$compare"
    for framework in torch keras; do
        python="$torch_python" script=bench/torch_baseline.py args=(--device cpu)
        if [ "$framework" = keras ]; then
            python="$keras_python" script=bench/keras_baseline.py args=()
        fi
        module="$framework"
        [ "$framework" = keras ] && module=tensorflow
        if "$python" -c "import $module" 2>/dev/null; then
            "$python" "$script" "${args[@]}" --batch-size "$batch" --repeats 5 \
                --json "$out/$framework-b$batch.json" 2>/dev/null
            "$whorl" compare "$out/whorl-b$batch.json" "$out/$framework-b$batch.json" \
                | tee -a "$compare"
            echo >> "$compare"
        else
            echo "$framework: not importable by $python, skipped" | tee -a "$compare"
        fi
    done
done
echo "report: $compare"
