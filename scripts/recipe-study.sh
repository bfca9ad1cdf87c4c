#!/usr/bin/env bash
# The quality-recipe study: the same short training run of the reference's model on the default
# synthetic set (224x224, seed 13, the reference's split) under each recipe below, each model
# then scored on the unseen sensor's test set and, when a folder of real prints is given, on
# those at their native resolution (never trained on). Writes study.md (a table) and each
# run's history, loss curve and scores under OUT.
#
#   scripts/recipe-study.sh WHORL OUT [REAL_PRINTS]
#
# WHORL is the whorl binary; STUDY_EPOCHS (default 10) and STUDY_DEVICE (default cuda) set the
# run length and the device, STUDY_TRAIN_ARGS adds arguments to every `whorl train` (a smaller
# synthetic set, say). Meant for a GPU: on the 2-core CPU one run takes about 20 minutes.
set -euo pipefail
whorl="${1:?usage: scripts/recipe-study.sh WHORL OUT [REAL_PRINTS]}"
out="${2:?usage: scripts/recipe-study.sh WHORL OUT [REAL_PRINTS]}"
real="${3:-}"
epochs="${STUDY_EPOCHS:-10}"
device="${STUDY_DEVICE:-cuda}"
mkdir -p "$out"

# name optimizer learning-rate batch-size: the reference first, then one change at a time.
recipes=(
    "reference-rmsprop-1e-3-b128 rmsprop 0.001 128"
    "adam-1e-3-b128 adam 0.001 128"
    "rmsprop-1e-3-b32 rmsprop 0.001 32"
    "adam-1e-3-b32 adam 0.001 32"
    "adam-3e-3-b32 adam 0.003 32"
    "adam-1e-3-b8 adam 0.001 8"
)
for recipe in "${recipes[@]}"; do
    read -r name optimizer lr batch <<<"$recipe"
    run="$out/$name"
    echo "== $name: $optimizer, learning rate $lr, batch $batch, $epochs epochs"
    "$whorl" train --device "$device" --optimizer "$optimizer" --lr "$lr" --batch-size "$batch" \
        --epochs "$epochs" --out "$run" --overwrite --quiet ${STUDY_TRAIN_ARGS:-}
    test_set="$(ls -d "${WHORL_CACHE:-$HOME/.cache/whorl}"/synthetic-*/test | head -n 1)"
    "$whorl" eval --device "$device" --model "$run" --data "$test_set" --no-identity \
        --out "$run/unseen.json"
    if [ -n "$real" ]; then
        "$whorl" eval --device "$device" --model "$run" --data "$real" --native-resolution \
            --no-identity --out "$run/real.json"
    fi
    rm -rf "$run/checkpoints" "$run/.lock"
done

python3 - "$out" "$epochs" "${STUDY_TRAIN_ARGS:-}" "${recipes[@]}" <<'PY'
import csv, json, os, sys
out, epochs, train_args, recipes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def ssim(run, name):
    path = os.path.join(out, run, f"{name}.json")
    return f"{json.load(open(path))[0]['ssim']['mean']:.3f}" if os.path.exists(path) else "-"
rows = []
for recipe in recipes:
    run, optimizer, lr, batch = recipe.split()
    history = list(csv.DictReader(open(os.path.join(out, run, "history.csv"))))
    seconds = sum(float(h["seconds"]) for h in history)
    rows.append((run, optimizer, lr, batch, f"{float(history[-1]['val_loss']):.5f}",
                 ssim(run, "unseen"), ssim(run, "real"), f"{seconds:.1f}"))
with open(os.path.join(out, "study.md"), "w") as f:
    data = f"with `{train_args}`" if train_args else "on the default synthetic set (224x224, seed 13)"
    f.write(f"{epochs} epochs each {data}\n\n")
    f.write("| recipe | optimizer | learning rate | batch | validation MSE | SSIM unseen sensor | SSIM real prints (native) | training s |\n")
    f.write("|---|---|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
print(open(os.path.join(out, "study.md")).read())
PY
