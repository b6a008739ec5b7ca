#!/usr/bin/env bash
# Regenerate the shipped comparison: lift, full, lora, magnitude and random, 3 seeds each,
# on the built-in model and tasks with every default (per-method learning rates from
# methods.DEFAULT_LRS), written by the CLI to sample_runs/<method>-seed<S>/, then print the
# markdown table used in docs/training.md.
# The runs keep no model (--no-save: the repository ships records only).
# Usage: bash sample_runs/make_sample_runs.sh   (from anywhere; ~1 min per run on 2 cores)
#   THREADS=2 to give each run both cores on an idle machine (default 1: the machine is shared).
#   TABLE_ONLY=1 to just print the table from the existing records.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1}
if [ -z "${TABLE_ONLY:-}" ]; then
  for seed in 0 1 2; do
    for method in lift full lora magnitude random; do
      nice python -m lift_core finetune --method "$method" --seed "$seed" --threads "$THREADS" \
        --no-progress --no-save --overwrite --out "sample_runs/$method-seed$seed" || true
    done
  done
fi
python - <<'PY'
from lift_core.runs.records import list_runs, runs_table

t = runs_table(list_runs("sample_runs"))
t = t[t["status"] == "completed"]
order = ["lift", "full", "lora", "magnitude", "random"]
print("| method | lr | runs | target acc before -> after | source acc after | forgetting "
      "| trainable numbers | optimizer state | ms / step | wall s |")
print("|---|---|---|---|---|---|---|---|---|---|")
pm = lambda s: f"{100 * s.mean():.1f} ± {100 * s.std(ddof=1):.1f}" if len(s) > 1 else f"{100 * s.mean():.1f}"
for method in order:
    g = t[t["method"] == method]
    if g.empty:
        continue
    print(f"| {method} | {g['lr'].iloc[0]:g} | {len(g)} | {100 * g['target_acc_before'].mean():.1f} -> "
          f"{pm(g['target_acc'])} | {pm(g['source_acc'])} (before {100 * g['source_acc_before'].mean():.1f}) "
          f"| {pm(g['forgetting'])} | {int(g['trainable_params'].iloc[0]):,} "
          f"| {g['optimizer_state_bytes'].iloc[0] / 1024:.0f} KiB | {1000 * g['seconds_per_step'].mean():.0f} "
          f"| {g['wall_seconds'].mean():.0f} |")
PY
