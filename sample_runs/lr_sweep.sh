#!/usr/bin/env bash
# The learning-rate sweep behind the methods' default learning rates (their records in
# lift_core/train/registry.py): every method on the same grid, on the built-in model and
# tasks with the default schedule (300 steps, lora/filter rank 4), one seed (100) kept apart
# from the seeds of the sample runs (0, 1, 2).
# Accuracy is measured once at the end on 60 evenly spread examples of each eval set (to keep
# the sweep cheap). Records go to runs/lr_sweep/ (git-ignored); the table printed at the
# end has target / source accuracy (%) per learning rate and method.
# Usage: bash sample_runs/lr_sweep.sh [METHOD ...]   (from the repository root; ~5 min per
# method on 2 cores). With no METHOD it sweeps every method in SWEPT; naming some
# (e.g. `pissa dora`) sweeps only those, and the table still shows every method swept so far.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/lr_sweep}
SWEPT="full lora lift magnitude random pissa dora"
for method in ${*:-$SWEPT}; do
  for lr in 3e-4 1e-3 3e-3 1e-2 3e-2; do
    dir="$OUT/$method-lr$lr"
    [ -f "$dir/summary.json" ] && continue
    nice python -m lift_core finetune --method "$method" --lr "$lr" --steps 300 \
      --lora-rank 4 --filter-rank 4 --update-interval 100 --seed 100 --eval-every 300 \
      --eval-limit 60 --threads 1 --no-progress --no-save --overwrite --out "$dir" > /dev/null \
      || echo "$dir did not complete (see its summary.json)"
  done
done
python - "$OUT" <<'PY'
import sys
from lift_core.train.registry import method_names
from lift_core.runs.records import list_runs, runs_table
t = runs_table(list_runs(sys.argv[1]))
methods = [m for m in method_names() if m in set(t["method"])]
print("| lr | " + " | ".join(methods) + " |")
print("|---|" + "---|" * len(methods))
for lr in sorted(set(t["lr"])):
    cells = []
    for m in methods:
        row = t[(t["method"] == m) & (t["lr"] == lr)]
        if row.empty:
            cells.append("")
        elif row["status"].iloc[0] != "completed":
            cells.append(row["status"].iloc[0])
        else:
            cells.append(f"{100 * row['target_acc'].iloc[0]:.0f} / {100 * row['source_acc'].iloc[0]:.0f}")
    print(f"| {lr:g} | " + " | ".join(cells) + " |")
PY
