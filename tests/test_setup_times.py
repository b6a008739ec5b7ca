"""Set-up time (model load, first masks, evaluation before training) is recorded apart from
the time per step, and shown by the compare table and the live panel (issue 15 item 4)."""

import json

import pytest

from lift_core.runs.records import read_run, runs_table
from lift_core.train.config import FinetuneConfig
from lift_core.train.loop import finetune

SETUP_FIELDS = ("setup_seconds", "load_seconds", "mask_seconds", "first_eval_seconds")


def test_summary_and_config_record_the_set_up_apart_from_the_steps(char_llama, tmp_path):
    config = FinetuneConfig(model=char_llama, steps=2, eval_every=2, eval_limit=4,
                            max_new_tokens=2, batch_size=4, train_examples=16, lora_rank=2,
                            filter_rank=2, out_dir=str(tmp_path / "run"))
    summary = finetune(config, progress=False)
    times = {k: summary[k] for k in SETUP_FIELDS}
    assert all(v is not None and v >= 0 for v in times.values()), times
    assert times["load_seconds"] + times["mask_seconds"] <= times["setup_seconds"]
    # Nothing counted twice: set-up, the first evaluation and the steps fit in the wall time.
    assert (times["setup_seconds"] + times["first_eval_seconds"] + summary["train_seconds"]
            <= summary["wall_seconds"] + 1e-3)
    record = read_run(tmp_path / "run")
    assert set(record.config["setup"]) == {"load_seconds", "mask_seconds"}
    row = runs_table([tmp_path / "run"]).iloc[0]
    assert row["mask_seconds"] == summary["mask_seconds"]

    from lift_core.cli.compare import summary_text
    from lift_ui.live_panel import setup_text

    state = {"status": "completed", "wall_seconds": 1.0,
             "runs": [{"method": "lift", "path": str(tmp_path / "run"), "status": "completed"}]}
    header, line = summary_text(state).splitlines()[:2]
    assert "setup s" in header and f"{summary['setup_seconds']:.1f}" in line
    text = setup_text(summary, record.config)
    assert text.startswith(f"Set-up {summary['setup_seconds']:.1f} s: model load")
    assert "masks" in text and "evaluation before training" in text
    # While the run goes there is no summary: config.json's load and mask times are shown.
    assert setup_text(None, record.config).startswith("Set-up: model load")
    assert setup_text(None, {}) is None  # an old record


def test_method_table_averages_the_set_up(tmp_path):
    from lift_core.runs.compare import method_table
    from tests.fake_runs import write_run

    for seed, seconds in ((0, 2.0), (1, 4.0)):
        run = write_run(tmp_path / f"lift{seed}", "lift", seed)
        summary = json.loads((run / "summary.json").read_text())
        summary.update(setup_seconds=seconds, mask_seconds=seconds / 2, first_eval_seconds=1.0)
        (run / "summary.json").write_text(json.dumps(summary))
    table = method_table(runs_table([tmp_path / "lift0", tmp_path / "lift1"]))
    assert table.loc[0, "setup_seconds_mean"] == pytest.approx(3.0)
    assert table.loc[0, "mask_seconds_mean"] == pytest.approx(1.5)


def test_progress_shows_the_set_up_phases_before_step_0(char_llama, tmp_path):
    """progress.json (and each callback's on_progress) goes "loading model", then "computing
    masks" matrix by matrix, then the evaluation before training (issue 14)."""
    run, seen = tmp_path / "run", []

    class Watcher:
        def on_progress(self, progress):
            on_disk = json.loads((run / "progress.json").read_text())
            seen.append((progress, on_disk, (run / "config.json").exists()))

    config = FinetuneConfig(model=char_llama, steps=1, eval_every=1, eval_limit=4,
                            max_new_tokens=2, batch_size=4, train_examples=8, lora_rank=2,
                            filter_rank=2, out_dir=str(run))
    finetune(config, callbacks=Watcher(), progress=False)
    assert all(progress == on_disk for progress, on_disk, _ in seen)
    phases = [p["phase"] for p, _, _ in seen]
    masks = [p for p, _, _ in seen if p["phase"] == "computing masks"]
    layers = read_run(run).config["budget"]["layers"]
    assert phases[0] == "loading model" and phases[1: 2 + len(layers)] == ["computing masks"] * (len(layers) + 1)
    assert [(p["done"], p["total"]) for p in masks] == [(i, len(layers)) for i in range(len(layers) + 1)]
    assert [p["layer"] for p in masks[1:]] == [row["layer"] for row in layers]
    assert phases[2 + len(layers)] == "evaluating before training"
    # The set-up phases come before config.json: the folder is claimed before the model loads.
    assert not any(started for p, _, started in seen if p["phase"] in ("loading model", "computing masks"))


def test_a_dense_method_shows_loading_then_evaluating(char_llama, tmp_path):
    seen = []
    config = FinetuneConfig(model=char_llama, method="full", steps=1, eval_every=1, eval_limit=2,
                            max_new_tokens=2, batch_size=2, train_examples=4, lora_rank=2,
                            out_dir=str(tmp_path / "run"))
    finetune(config, callbacks=type("W", (), {"on_progress": lambda self, p: seen.append(p["phase"])})(),
             progress=False)
    assert seen[0] == "loading model" and seen[1] == "evaluating before training"
    assert "computing masks" not in seen
