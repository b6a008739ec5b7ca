"""The claims table (lift_core.sweeps.claims): the verdict rule, each claim's numbers on run
records written with known evaluations, and the shipped sample sweep's table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lift_core.errors import LiftError
from lift_core.sweeps import claims
from tests.test_sweep_views import write_record

REPO_SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"


def test_compare_counts_a_difference_only_beyond_the_larger_std():
    assert claims.compare((0.80, 0.02), (0.70, 0.05)) == ">"
    assert claims.compare((0.80, 0.02), (0.77, 0.05)) == "="
    assert claims.compare((0.60, 0.02), (0.70, 0.05)) == "<"
    # Lower is better for forgetting; a NaN std (one seed) counts as 0.
    assert claims.compare((0.10, float("nan")), (0.30, float("nan")), higher_is_better=False) == ">"


def test_row_and_claim_verdicts():
    assert claims.row_verdict([">", ">"]) == "holds"
    assert claims.row_verdict([">", "="]) == "mixed"
    assert claims.row_verdict(["=", "="]) == "does not hold"
    assert claims.row_verdict([">", "<"]) == "does not hold"
    assert claims.claim_verdict(["holds", "holds", "no verdict"]) == "holds"
    assert claims.claim_verdict(["does not hold", "does not hold"]) == "does not hold"
    assert claims.claim_verdict(["holds", "does not hold"]) == "mixed"
    assert claims.claim_verdict(["mixed", "does not hold"]) == "does not hold"  # it never fully holds
    assert claims.claim_verdict(["no verdict"]) == "no verdict"


def _seeds(root: Path, method: str, finals, *, lr=1e-2, budget=2, drop=0.2, reach_step=None):
    """One record per seed, ending at target ``finals[seed]`` with source 0.9 - drop; with
    ``reach_step`` the target passes 0.5 at that step (source then 0.9 - drop / 2)."""
    for seed, final in enumerate(finals):
        middle = (reach_step or 10, 0.6 if reach_step else 0.3, 0.9 - drop / 2)
        evals = ((0, 0.1, 0.9), middle, (20, final, 0.9 - drop))
        write_record(root / f"{method}-b{budget}-lr{lr:g}-s{seed}", method, seed=seed, lr=lr, budget=budget,
                     evals=evals, fraction=1.0 if method == "full" else 0.02 * budget)


def test_budget_rows_compare_each_method_at_its_best_rate(tmp_path):
    _seeds(tmp_path, "lift", (0.80, 0.82, 0.78))
    _seeds(tmp_path, "lift", (0.40, 0.42, 0.38), lr=1e-3)  # a worse rate is not the one compared
    _seeds(tmp_path, "magnitude", (0.60, 0.62, 0.58))
    _seeds(tmp_path, "random", (0.30, 0.32, 0.28))
    _seeds(tmp_path, "lift", (0.70, 0.72, 0.68), budget=4)
    _seeds(tmp_path, "magnitude", (0.71, 0.73, 0.69), budget=4)
    _seeds(tmp_path, "random", (0.40, 0.42, 0.38), budget=4)
    from lift_core.sweeps import views

    rows = claims.budget_rows(views.load_points(views.sweep_run_dirs(tmp_path)))
    assert list(rows["verdict"]) == ["holds", "mixed"]
    assert "LIFT 80.0 ± 2.0% (lr 0.01, 3 seeds)" in rows["measured"][0]
    assert rows["where"][0] == "budget rank 2 (4.0% of entries)"
    assert rows["comparisons"][1] == "LIFT = magnitude, magnitude > random, LIFT > random"


def test_forgetting_rows_at_matched_target(tmp_path):
    # Target 0.1 -> 0.6 over steps 0-10 crosses 50% at step 8, 80% of the way: LIFT has lost
    # 4 points of source there, full and LoRA 12.
    _seeds(tmp_path, "lift", (0.8, 0.8, 0.8), drop=0.1, reach_step=10)
    _seeds(tmp_path, "lift", (0.8, 0.8, 0.8), lr=1e-1, drop=0.5, reach_step=10)  # worse rate, ignored
    _seeds(tmp_path, "full", (0.95, 0.95, 0.95), lr=1e-3, drop=0.3, reach_step=10)
    _seeds(tmp_path, "lora", (0.6, 0.6, 0.6), drop=0.3, reach_step=10)
    rows = claims.forgetting_rows(claims.views.sweep_run_dirs(tmp_path), levels=(0.5, 0.9))
    first = rows.iloc[0]
    assert first["where"] == "target reaches 50%" and first["verdict"] == "holds"
    assert "LIFT 4.0 ± 0.0 pt (lr 0.01, step 8)" in first["measured"]
    assert "full FT 12.0 ± 0.0 pt (lr 0.001" in first["measured"]
    assert first["comparisons"].startswith("LIFT forgets less than full FT")
    # Nobody but full fine-tuning reaches 90%: no verdict, and the claim is decided by 50% alone.
    assert rows.iloc[1]["verdict"] == "no verdict" and "LIFT" in rows.iloc[1]["measured"]
    assert claims.verdicts(rows) == {"forgetting": "holds"}


def _noise_draws(lift, others):
    rows = []
    for selector, losses in {"lift": lift, **others}.items():
        for scale, values in losses.items():
            rows += [{"selector": selector, "scale": scale, "draw": d, "source_loss": v} for d, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_noise_rows_per_scale():
    draws = _noise_draws({0.5: (0.050, 0.052), 2.0: (0.12, 0.13)},
                         {"magnitude": {0.5: (0.030, 0.031), 2.0: (0.27, 0.28)},
                          "random": {0.5: (0.028, 0.029), 2.0: (0.09, 0.08)}})
    rows = claims.noise_rows(draws)
    assert list(rows["where"]) == ["noise 0.5σ", "noise 2σ"]
    assert list(rows["verdict"]) == ["holds", "does not hold"]
    assert rows["comparisons"][1] == "LIFT < magnitude, LIFT > random"
    assert rows["measured"][0].startswith("LIFT 0.0510 ± 0.0014; magnitude 0.0305")
    assert claims.verdicts(rows) == {"noise": "mixed"}
    with pytest.raises(LiftError, match="source_loss"):
        claims.noise_rows(draws.drop(columns="source_loss"))


def test_claims_table_and_markdown(tmp_path):
    main = tmp_path / "sweep"
    _seeds(main, "lift", (0.8, 0.81, 0.79), drop=0.1, reach_step=10)
    _seeds(main, "magnitude", (0.6, 0.61, 0.59), drop=0.1, reach_step=10)
    _seeds(main, "random", (0.3, 0.31, 0.29))
    _seeds(main, "full", (0.9, 0.9, 0.9), lr=1e-3, drop=0.05, reach_step=10)
    _seeds(main, "lora", (0.9, 0.9, 0.9), drop=0.3, reach_step=10)
    csv = tmp_path / "noise.csv"
    _noise_draws({1.0: (0.06, 0.061)}, {"magnitude": {1.0: (0.03, 0.031)}}).to_csv(csv, index=False)
    rows = claims.claims_table(main, sensitivity_csv=csv)
    assert claims.verdicts(rows) == {"budget": "holds", "forgetting": "does not hold", "noise": "holds"}
    text = claims.claims_markdown(rows)
    assert text.splitlines()[0].startswith("| claim |")
    assert "at equal budget (final target accuracy): **holds**" in text
    assert "LIFT forgets more than full FT, LIFT forgets less than LoRA" in text
    with pytest.raises(LiftError, match="does not exist"):
        claims.claims_table(main, sensitivity_csv=tmp_path / "missing.csv")


def write_sample_sweep(root: Path) -> Path:
    """A small stand-in for sample_runs/'s sweep/, sweep-budget/ and sensitivity_builtin.csv."""
    main, budget = root / "sweep", root / "sweep-budget"
    _seeds(main, "lift", (0.8, 0.81, 0.79), drop=0.1, reach_step=10)
    _seeds(main, "magnitude", (0.6, 0.61, 0.59), drop=0.1, reach_step=10)
    _seeds(main, "random", (0.3, 0.31, 0.29))
    _seeds(main, "full", (0.9, 0.9, 0.9), lr=1e-3, drop=0.05, reach_step=10)
    _seeds(main, "lora", (0.9, 0.9, 0.9), drop=0.3, reach_step=10)
    for rank, shift in ((1, -0.2), (4, 0.1)):
        for method, finals in (("lift", (0.8, 0.81, 0.79)), ("magnitude", (0.6, 0.61, 0.59)), ("random", (0.3, 0.3, 0.3))):
            _seeds(budget, method, [f + shift for f in finals], budget=rank)
    for folder, argv in ((main, ["sweep", "--methods", "lift,full,lora,magnitude,random", "--lrs", "1e-3,1e-2",
                                 "--seeds", "0,1,2", "--steps", "20", "--lora-rank", "2", "--eval-every", "10"]),
                         (budget, ["sweep", "--budgets", "1,2,4"])):
        runs = [{"name": d.name, "dir": d.name, "status": "completed"} for d in sorted(folder.iterdir())]
        (folder / "sweep.json").write_text(json.dumps({"kind": "lift-sweep", "version": 1, "argv": argv,
                                                       "runs": runs, "status": "completed"}))
    _noise_draws({1.0: (0.06, 0.061), 2.0: (0.2, 0.21)},
                 {"magnitude": {1.0: (0.03, 0.031), 2.0: (0.3, 0.31)}}).to_csv(root / "sensitivity_builtin.csv",
                                                                                 index=False)
    return root


def test_sample_claims_reads_the_three_sources(tmp_path):
    rows = claims.sample_claims(write_sample_sweep(tmp_path))
    assert claims.verdicts(rows) == {"budget": "holds", "forgetting": "does not hold", "noise": "mixed"}
    assert list(rows.loc[rows["claim"] == "budget", "where"].str[:13]) == ["budget rank 1", "budget rank 2",
                                                                          "budget rank 4"]
    text = claims.claim_sentences(rows)
    assert text["budget"].startswith("Final target accuracy at equal budget")
    assert "holds at every budget" in text["budget"]
    assert "does not hold at any target level" in text["forgetting"]
    assert "it holds at noise 1σ" in text["noise"] and "In part" not in text["noise"]


def test_claim_sentences_name_the_rows_that_hold_in_part():
    rows = claims.noise_rows(_noise_draws({1.0: (0.06, 0.061)}, {"magnitude": {1.0: (0.06, 0.061)},
                                                                "random": {1.0: (0.03, 0.031)}}))
    text = claims.claim_sentences(rows)["noise"]
    assert "does not hold at any noise scale" in text
    assert "In part (some comparisons won, the rest tied) at noise 1σ." in text


@pytest.mark.skipif(not (REPO_SAMPLES / "sweep" / "sweep.json").is_file(), reason="sample sweep not generated")
def test_the_shipped_sample_sweep_has_a_claims_table():
    rows = claims.sample_claims(REPO_SAMPLES)
    assert {"budget", "forgetting"} <= set(rows["claim"])
    assert set(rows["verdict"]) <= {"holds", "does not hold", "mixed", "no verdict"}
    assert claims.claims_markdown(rows).count("\n") == len(rows) + 1
