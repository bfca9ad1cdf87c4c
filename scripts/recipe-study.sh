#!/usr/bin/env bash
# The quality-recipe study: the same short training run of the reference's model under each
# recipe of a list, each model then scored on the unseen sensor's test set (the `test` folder
# beside the synthetic training set) and, when a folder of real prints is given, on those at
# their native resolution (never trained on). Writes study.md (a table) and each run's history,
# loss curve and scores under OUT.
#
#   scripts/recipe-study.sh WHORL OUT [REAL_PRINTS]
#
# WHORL is the whorl binary. STUDY_RECIPES names the list (default bench/recipes/whole-images.txt;
# a recipe per line: its name, then `whorl train` arguments); STUDY_EPOCHS (default 10) and
# STUDY_DEVICE (default cuda) set the run length and the device; STUDY_TRAIN_ARGS adds arguments
# to every run (a smaller synthetic set, say). A model trained on crops is scored at the images'
# own resolution on both sets, one trained on whole prints on the unseen sensor at its input size.
# A recipe whose run under OUT holds its scores already is kept, so a study cut short (or given
# more recipes) continues where it stopped.
set -euo pipefail
usage="usage: scripts/recipe-study.sh WHORL OUT [REAL_PRINTS]"
whorl="${1:?$usage}"
out="${2:?$usage}"
real="${3:-}"
recipes_file="${STUDY_RECIPES:-$(dirname "$0")/../bench/recipes/whole-images.txt}"
epochs="${STUDY_EPOCHS:-10}"
device="${STUDY_DEVICE:-cuda}"
mkdir -p "$out"
mapfile -t recipes < <(grep -v '^[[:space:]]*\(#\|$\)' "$recipes_file")
[ "${#recipes[@]}" -gt 0 ] || { echo "no recipes in $recipes_file" >&2; exit 2; }

for recipe in "${recipes[@]}"; do
    read -r name args <<<"$recipe"
    run="$out/$name"
    if [ -f "$run/unseen.json" ] && { [ -z "$real" ] || [ -f "$run/real.json" ]; }; then
        echo "== $name: scored already, kept"
        continue
    fi
    echo "== $name: $args, $epochs epochs"
    # shellcheck disable=SC2086 # the recipe's and STUDY_TRAIN_ARGS's words are arguments
    "$whorl" train --device "$device" $args --epochs "$epochs" --out "$run" --overwrite --quiet \
        ${STUDY_TRAIN_ARGS:-}
    data_dir="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["data_dir"])' \
        "$(ls -d "$run"/checkpoints/epoch-* | tail -n 1)/checkpoint.json")"
    "$whorl" eval --device "$device" --model "$run" --data "$(dirname "$data_dir")/test" \
        --no-identity --out "$run/unseen.json"
    if [ -n "$real" ]; then
        "$whorl" eval --device "$device" --model "$run" --data "$real" --native-resolution \
            --no-identity --out "$run/real.json"
    fi
    rm -rf "$run/checkpoints" "$run/.lock"
done

python3 - "$out" "$epochs" "${STUDY_TRAIN_ARGS:-}" "$recipes_file" "${recipes[@]}" <<'PY'
import csv, json, os, sys
out, epochs, train_args, recipes_file, recipes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
def ssim(run, name):
    path = os.path.join(out, run, f"{name}.json")
    return f"{json.load(open(path))[0]['ssim']['mean']:.3f}" if os.path.exists(path) else "-"
rows = []
for recipe in recipes:
    run, args = (recipe.split(None, 1) + [""])[:2]
    history = list(csv.DictReader(open(os.path.join(out, run, "history.csv"))))
    seconds = sum(float(h["seconds"]) for h in history)
    rows.append((run, f"`{' '.join(args.split())}`", f"{float(history[-1]['val_loss']):.5f}",
                 ssim(run, "unseen"), ssim(run, "real"), f"{seconds:.1f}"))
with open(os.path.join(out, "study.md"), "w") as f:
    data = f" with `{train_args}`" if train_args else ""
    f.write(f"{epochs} epochs each{data}, recipes from {os.path.basename(recipes_file)}\n\n")
    f.write("| recipe | whorl train arguments | validation MSE | SSIM unseen sensor | SSIM real prints (native) | training s |\n")
    f.write("|---|---|---:|---:|---:|---:|\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
print(open(os.path.join(out, "study.md")).read())
PY
