"""The sweep views (lift_core.sweeps.views), their figures, the Sweep tab's command and the tab.

Run records are written directly with known evaluations, so every number is checked exactly:
the interpolation at a crossing, a level reached before training, runs that never reach a
level counted (not averaged), mean and std over seeds, Pareto flags, the CSVs. The AppTest
opens the Fine-tune page's Sweep tab on a fake sweep folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from lift_core.errors import LiftError
from lift_core.sweeps import views
from lift_core.train.config import FinetuneConfig
from lift_ui.figures import sweep as figs
from lift_core.cli.main import build_parser
from lift_core.sweeps.plan import parse_grid, plan_runs
from lift_ui.sweep_form import shared_settings, sweep_argv

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def write_record(path: Path, method: str, *, seed: int = 0, lr: float = 1e-3, budget: int = 4,
                 evals=((0, 0.1, 0.9), (10, 0.5, 0.8)), fraction: float = 0.05,
                 status: str = "completed", subset_from: int | None = None) -> Path:
    """A run record whose evaluations are ``evals`` = (step, target_acc, source_acc), exactly;
    rows from step ``subset_from`` on (but the last) carry eval_examples, as subset evaluations do."""
    path.mkdir(parents=True, exist_ok=True)
    config = {"format": "lift-run/1", "method": method, "seed": seed, "lr": lr, "lr_used": lr,
              "lora_rank": budget, "steps": evals[-1][0], "budget": {"trainable_fraction": fraction}}
    rows = []
    for i, (step, target, source) in enumerate(evals):
        row = {"step": step, "target_acc": target, "source_acc": source}
        if subset_from is not None and subset_from <= step and i < len(evals) - 1:
            row["eval_examples"] = 20
        rows += [{"step": step, "loss": 1.0, "lr": lr}] if step else []
        rows.append(row)
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, last = evals[0], evals[-1]
    summary = {"status": status, "method": method, "target_acc_before": first[1], "source_acc_before": first[2],
               "target_acc": last[1], "source_acc": last[2], "forgetting": first[2] - last[2]}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def write_sweep(root: Path) -> Path:
    """lift x 3 seeds (two reach 50% target, one never), full x 2 lrs, a stopped lift run, and sweep.json."""
    lift = [((0, 0.2, 0.9), (10, 0.4, 0.8), (20, 0.8, 0.6)),
            ((0, 0.6, 0.9), (10, 0.7, 0.85), (20, 0.9, 0.7)),
            ((0, 0.1, 0.9), (10, 0.2, 0.9), (20, 0.3, 0.85))]
    entries = []
    for seed, evals in enumerate(lift):
        entries.append(("lift-b4-lr0.001-s%d" % seed, "lift", 1e-3, seed, 4, "completed", evals))
    entries.append(("lift-b4-lr0.01-s0", "lift", 1e-2, 0, 4, "stopped", lift[0]))
    for lr, target in ((1e-4, 0.5), (1e-3, 0.9)):
        evals = ((0, 0.1, 0.9), (10, target, 0.5))
        entries.append((f"full-lr{lr:g}-s0", "full", lr, 0, None, "completed", evals))
    runs = []
    for name, method, lr, seed, budget, status, evals in entries:
        write_record(root / name, method, seed=seed, lr=lr, budget=budget or 4, evals=evals, status=status,
                     fraction=1.0 if method == "full" else 0.05, subset_from=10)
        runs.append({"name": name, "dir": name, "method": method, "lr": lr, "seed": seed, "budget": budget,
                     "status": status, "seconds": 1.0})
    index = {"kind": "lift-sweep", "version": 1, "created": 0, "argv": ["sweep", "--methods", "lift,full"],
             "grid": {"methods": ["lift", "full"], "lrs": None, "seeds": [0, 1, 2], "budgets": None},
             "runs": runs, "done": len(runs), "total": len(runs), "eta_seconds": None, "status": "stopped"}
    (root / "sweep.json").write_text(json.dumps(index))
    return root


def _evals(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["step", "target_acc", "source_acc"])


def test_source_accuracy_is_interpolated_at_the_first_crossing():
    evals = _evals([(0, 0.2, 0.9), (10, 0.4, 0.8), (20, 0.8, 0.6), (30, 0.3, 0.5)])
    step, source = views.source_at_target(evals, 0.5)  # 0.4 -> 0.8: a quarter of the way
    assert step == pytest.approx(12.5) and source == pytest.approx(0.75)
    assert views.source_at_target(evals, 0.8) == pytest.approx((20, 0.6))  # reached exactly at 20
    assert views.source_at_target(evals, 0.9) is None


def test_a_level_reached_before_training_takes_the_value_before():
    evals = _evals([(0, 0.6, 0.9), (10, 0.7, 0.85)])
    assert views.source_at_target(evals, 0.5) == (0, 0.9)


def test_forgetting_at_target_counts_runs_that_never_reach_a_level(tmp_path):
    root = write_sweep(tmp_path / "sweep")
    table = views.forgetting_at_target(views.sweep_run_dirs(root), levels=(0.5, 0.8, 0.95))
    lift = table[table["method"] == "lift"].set_index("level")
    # Seed 0 crosses 0.5 at step 12.5 (source 0.75), seed 1 is there before training (0.9),
    # seed 2 never gets there; the stopped run is not a completed run: not counted at all.
    assert lift.loc[0.5, "n_reached"] == 2 and lift.loc[0.5, "n_total"] == 3
    assert lift.loc[0.5, "source_mean"] == pytest.approx(0.825)
    assert lift.loc[0.5, "source_std"] == pytest.approx(pd.Series([0.75, 0.9]).std())
    assert lift.loc[0.5, "forgetting_mean"] == pytest.approx((0.15 + 0.0) / 2)
    assert lift.loc[0.5, "step_mean"] == pytest.approx(6.25)
    # 0.8: seed 0 at step 20 (0.6), seed 1 between 10 and 20 (halfway: 0.775).
    assert lift.loc[0.8, "n_reached"] == 2 and lift.loc[0.8, "source_mean"] == pytest.approx((0.6 + 0.775) / 2)
    assert lift.loc[0.95, "n_reached"] == 0 and pd.isna(lift.loc[0.95, "source_mean"])
    assert list(table["method"].unique()) == ["lift", "full"]  # registry order


def test_points_and_seed_means(tmp_path):
    root = tmp_path / "s"
    for seed, target in enumerate((0.5, 0.6, 0.7)):
        write_record(root / f"r{seed}", "lift", seed=seed, evals=((0, 0.1, 0.9), (10, target, 0.8)))
    points = views.load_points(views.sweep_run_dirs(root))  # no sweep.json: every run under it
    assert len(points) == 3 and list(points.columns) == views.POINT_COLUMNS
    assert points["forgetting"].tolist() == pytest.approx([0.1, 0.1, 0.1])
    curve = views.lr_curve(points)
    assert len(curve) == 1 and curve.loc[0, "n_seeds"] == 3
    assert curve.loc[0, "target_acc_mean"] == pytest.approx(0.6)
    assert curve.loc[0, "target_acc_std"] == pytest.approx(0.1)  # ddof=1


def test_pareto_flags_are_per_method():
    points = pd.DataFrame({"method": ["lift"] * 4 + ["full"], "target_acc": [0.5, 0.7, 0.6, 0.5, 0.1],
                           "source_acc": [0.9, 0.7, 0.6, 0.8, 0.1], "lr": 1e-3, "seed": 0, "budget": 4})
    flags = views.frontier(points)["on_front"].tolist()
    # (0.6, 0.6) is beaten by (0.7, 0.7), (0.5, 0.8) by (0.5, 0.9); full's lone point is its own front.
    assert flags == [True, True, False, False, True]


def test_budget_curve_keeps_the_best_rate_per_budget(tmp_path):
    root = write_sweep(tmp_path / "sweep")
    points = views.load_points(views.sweep_run_dirs(root))
    best = views.budget_curve(points)
    full = best[best["method"] == "full"]
    assert len(full) == 1 and full["lr"].item() == pytest.approx(1e-3) and pd.isna(full["budget"].item())
    assert len(views.budget_curve(points, best_lr=False)) == 3  # lift at 1e-3, full at two rates


def test_csvs_and_the_summary_table(tmp_path):
    root = write_sweep(tmp_path / "sweep")
    paths = views.write_csvs(root)
    assert [p.name for p in paths] == list(views.CSV_FILES)
    frontier = pd.read_csv(root / "frontier.csv")
    assert list(frontier.columns) == views.POINT_COLUMNS + ["on_front"] and len(frontier) == 5
    assert list(pd.read_csv(root / "forgetting_at_target.csv").columns) == views.AT_TARGET_COLUMNS
    for name in ("budget_curve.csv", "lr_curve.csv"):
        columns = pd.read_csv(root / name).columns
        assert {"method", "lr", "budget", "trainable_fraction", "target_acc_mean", "target_acc_std",
                "forgetting_mean", "forgetting_std", "n_seeds"} <= set(columns)
    text = views.summary_table(root)
    assert "2/3" in text and "82.5 ± 10.6" in text


def test_sweep_run_dirs_follow_the_index_and_refuse_a_missing_folder(tmp_path):
    root = write_sweep(tmp_path / "sweep")
    assert [p.name for p in views.sweep_run_dirs(root)][:2] == ["lift-b4-lr0.001-s0", "lift-b4-lr0.001-s1"]
    with pytest.raises(LiftError, match="does not exist"):
        views.sweep_run_dirs(tmp_path / "nope")


def test_figures_mark_the_front_and_count_runs_that_reached(tmp_path):
    root = write_sweep(tmp_path / "sweep")
    run_dirs = views.sweep_run_dirs(root)
    points = views.load_points(run_dirs)
    fig = figs.frontier_figure(views.frontier(points))
    hollow = [t for t in fig.data if t.marker.symbol == "circle-open"]
    assert hollow and all(t.showlegend is False for t in hollow)
    assert list(fig.layout.xaxis.range) == [-2, 102]
    bars = figs.forgetting_at_target_figure(views.forgetting_at_target(run_dirs, levels=(0.5,)))
    assert "2/3 reached" in bars.data[0].text
    assert figs.budget_figure(views.budget_curve(points)).layout.xaxis.type == "log"
    assert len(figs.lr_figure(views.lr_curve(points)).data) == 4  # 2 methods x 2 panels


def test_the_sweep_command_takes_the_grid_and_the_shared_settings(tmp_path):
    settings = FinetuneConfig(steps=50, eval_every=10, seed=3, lora_rank=2)
    grid = parse_grid("lift,full", "1e-3, 3e-3", "0, 1", "1, 4")
    argv = sweep_argv(settings, grid, tmp_path / "out")
    assert argv[:9] == ["sweep", "--methods", "lift,full", "--lrs", "0.001,0.003", "--seeds", "0,1",
                        "--budgets", "1,4"]
    assert "--seed" not in argv and "--lora-rank" not in argv and "--method" not in argv
    # The sweep command reads it back as the same grid and settings.
    args = build_parser().parse_args(argv)
    assert parse_grid(args.methods, args.lrs, args.seeds, args.budgets) == grid
    assert (args.steps, args.eval_every, args.out) == (50, 10, str(tmp_path / "out"))
    runs = plan_runs(grid, tmp_path / "out", **shared_settings(settings, grid))
    assert len(runs) == 2 * 2 * 2 + 2 * 2  # full has no budget axis
    no_budgets = parse_grid("lift", None, "0")
    assert "--lora-rank" in sweep_argv(settings, no_budgets, tmp_path) and "--lrs" not in sweep_argv(settings, no_budgets, tmp_path)


def test_the_sweep_tab_shows_the_four_views(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "no_samples"))
    write_sweep(tmp_path / "runs" / "sweep-20250101-000000")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("python -m lift_core sweep --methods") for c in at.code)
    headers = [h.value for h in at.subheader]
    for title in ("Frontier", "Forgetting at matched target accuracy", "Budget curve", "Learning-rate curve"):
        assert title in headers
    assert len(at.get("plotly_chart")) >= 4
    assert any(b.key == "sw_view_resume" for b in at.button)  # the index says stopped
    at.text_input(key="sw_lrs").set_value("1e-3, fast").run()
    assert not at.exception, at.exception
    assert any("'fast' is not a number" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "sw_launch"]
