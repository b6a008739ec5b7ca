#!/usr/bin/env bash
# Regenerate the shipped sample sweep and print its claims table (lift_core/sweeps/claims.py),
# the markdown pasted into the README. The setting was chosen by measurement (README, "Sample
# sweep: the paper's claims"): built-in model and tasks, 150 steps, budget rank 2 (2.4% of the
# block-linear entries), evaluations every 25 steps on 40 evenly spread examples of each set and
# on the whole sets before and after training.
#   sample_runs/sweep/         lift, full, lora, magnitude, random x lr 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1
#                              x seeds 0, 1, 2 (90 runs)
#   sample_runs/sweep-budget/  lift, magnitude, random x budget rank 1, 2, 4, 8 at their default
#                              lr (1e-2) x seeds 0, 1, 2 (36 runs)
#   sample_runs/sensitivity_builtin.csv  the noise test with its defaults (budget rank 4,
#                              filter rank 4, scales 0.25-4, 3 draws)
# Records only (--no-save: no model weights). A sweep that stopped continues where it stopped
# when this script runs again (completed runs are skipped); OVERWRITE=1 trains everything again.
# Usage: bash sample_runs/make_sample_sweep.sh   (from anywhere; ~25-35 s per run on one core)
#   PARALLEL=1 runs the two sweeps at once, one core each (~30 min on 2 idle cores; else ~55 min).
#   THREADS=N torch threads per sweep (default 1). TABLE_ONLY=1 just prints the claims table.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1}
COMMON=(--steps 150 --eval-every 25 --eval-subset 40 --seeds 0,1,2 --threads "$THREADS"
        --no-save --no-progress ${OVERWRITE:+--overwrite})
main_sweep() {
  nice python -m lift_core sweep --methods lift,full,lora,magnitude,random --lrs 3e-4,1e-3,3e-3,1e-2,3e-2,1e-1 \
    --lora-rank 2 "${COMMON[@]}" --out sample_runs/sweep > /dev/null
}
budget_sweep() {
  nice python -m lift_core sweep --methods lift,magnitude,random --budgets 1,2,4,8 \
    "${COMMON[@]}" --out sample_runs/sweep-budget > /dev/null
  if [ -n "${OVERWRITE:-}" ] || [ ! -f sample_runs/sensitivity_builtin.csv ]; then
    nice python -m lift_core sensitivity --model builtin --threads "$THREADS" --no-progress \
      --out sample_runs/sensitivity_builtin.csv > /dev/null
  fi
}
if [ -z "${TABLE_ONLY:-}" ]; then
  if [ -n "${PARALLEL:-}" ]; then
    main_sweep & main=$!
    budget_sweep
    wait "$main"
  else
    main_sweep
    budget_sweep
  fi
fi
python - <<'PY'
from lift_core.sweeps.claims import claims_markdown, sample_claims

print(claims_markdown(sample_claims("sample_runs")))
PY
