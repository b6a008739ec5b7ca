"""Training figure builders and record reshaping, as plain functions (no Streamlit, no browser)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lift_core.runs.compare import method_table
from lift_core.runs.records import read_run, runs_table
from lift_ui import run_data
from lift_ui.figures import training as figs
from tests.fake_runs import write_interrupted_run, write_run, write_sample_set


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_sample_set(tmp_path_factory.mktemp("samples"), seeds=(0, 1))


def _records(root, names):
    return {name: read_run(root / name) for name in names}


def test_ema_smooths_and_skips_nans():
    values = [1.0, np.nan, 3.0, 3.0]
    out = figs.ema(values, 0.5)
    assert out[0] == 1.0 and out[1] == 1.0
    assert 1.0 < out[2] < 3.0 and out[2] < out[3] < 3.0


def test_loss_figure_raw_and_ema_for_one_run_log_toggle(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0"]))
    fig = figs.loss_figure(data, steps=60)
    assert [t.name for t in fig.data] == ["lift-seed0 (raw)", "lift-seed0 (EMA)"]
    assert len(fig.data[0].x) == 60  # step 0 has no loss
    assert fig.layout.yaxis.type == "linear" and list(fig.layout.xaxis.range) == [-0.02 * 60, 60 * 1.02]
    assert figs.loss_figure(data, log_y=True).layout.yaxis.type == "log"


def test_loss_figure_overlay_colours_by_method_and_dashes_repeats(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0", "lift-seed1", "full-seed0"]))
    fig = figs.loss_figure(data)
    assert [t.name for t in fig.data] == ["lift-seed0", "lift-seed1", "full-seed0"]  # no raw for several
    assert fig.data[0].line.color == fig.data[1].line.color == figs.METHOD_COLORS["lift"]
    assert fig.data[0].line.dash != fig.data[1].line.dash
    assert fig.data[2].line.color == figs.METHOD_COLORS["full"]


def test_accuracy_figure_has_two_rows_on_a_shared_x_axis(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0", "lora-seed0"]))
    fig = figs.accuracy_figure(data, steps=60)
    assert len(fig.data) == 4  # 2 runs x (target, source)
    assert {t.yaxis for t in fig.data} == {"y", "y2"}
    assert fig.layout.xaxis.matches == "x2" or fig.layout.xaxis2.matches == "x"  # linked
    target = next(t for t in fig.data if t.name == "lift-seed0" and t.yaxis == "y")
    assert list(target.x) == [0, 20, 40, 60] and max(target.y) <= 100  # percent
    assert sum(t.showlegend is not False for t in fig.data) == 2  # one legend entry per run


def test_accuracy_figure_draws_std_error_bars_for_mean_curves(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0", "lift-seed1"]))
    curves = run_data.mean_curves(data)
    assert set(curves["label"]) == {"LIFT"}
    fig = figs.accuracy_figure(curves)
    assert fig.data[0].error_y.array is not None and len(fig.data[0].error_y.array) == 4


def test_churn_figure_only_has_refresh_steps(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0", "full-seed0"]))
    fig = figs.churn_figure(data)
    assert len(fig.data) == 1 and list(fig.data[0].x) == [20, 40, 60]
    assert not fig.layout.annotations
    empty = figs.churn_figure(data[data["step"] < 20], steps=60)  # before the first refresh
    assert not empty.data and "no mask refresh yet" in empty.layout.annotations[0].text


def test_tradeoff_figure_one_point_per_method_with_error_bars(samples):
    table = runs_table(sorted(samples.iterdir()))
    points = run_data.method_points(table)
    assert list(points["method"]) == ["lift", "full", "lora", "magnitude", "random"]
    assert (points["runs"] == 2).all()
    fig = figs.tradeoff_figure(points)
    assert len(fig.data) == 5
    lift = fig.data[0]
    assert lift.text == ("LIFT",) and lift.error_x.array is not None and lift.error_y.array is not None
    row = table[table["method"] == "lift"]
    assert lift.x[0] == pytest.approx(100 * row["forgetting"].mean())
    assert "forgetting" in fig.layout.xaxis.title.text


def test_method_points_leave_out_runs_that_did_not_complete(samples, tmp_path):
    extra = []
    for name, status in (("failed", "failed"), ("stopped", "stopped")):
        run = write_run(tmp_path / name, "lift", 9, status=status)
        summary = json.loads((run / "summary.json").read_text())
        # Ended before its first evaluation: the "after" numbers are the step-0 ones.
        summary.update(target_acc=summary["target_acc_before"], source_acc=summary["source_acc_before"],
                       forgetting=0.0, steps_done=3)
        (run / "summary.json").write_text(json.dumps(summary))
        extra.append(run)
    extra.append(write_interrupted_run(tmp_path / "killed", "lift", 8))
    table = runs_table([*sorted(samples.iterdir()), *extra])
    assert table.set_index("run").loc[["failed", "stopped", "killed"], "status"].tolist() == [
        "failed", "stopped", "interrupted"]
    points = run_data.method_points(table).set_index("method")
    completed = table[(table["method"] == "lift") & (table["status"] == "completed")]
    assert points.loc["lift", "runs"] == 2
    assert points.loc["lift", "target_acc"] == pytest.approx(completed["target_acc"].mean())
    assert len(run_data.completed_runs(table)) == len(table) - 3
    records = {r.name: read_run(r) for r in extra}
    assert list(run_data.tradeoff_points(records)["label"]) == ["stopped"]  # failed and killed: no point


def test_tradeoff_figure_skips_runs_without_a_result():
    points = pd.DataFrame([{"label": "a", "method": "lift", "target_acc": None, "forgetting": 0.1},
                           {"label": "b", "method": "lora", "target_acc": 0.5, "forgetting": 0.2}])
    fig = figs.tradeoff_figure(points)
    assert [t.name for t in fig.data] == ["b"] and fig.data[0].error_x.array is None


def test_memory_figure_bars_per_method():
    table = pd.DataFrame({"method": ["lift", "full"], "trainable_params": [10, 100],
                          "optimizer_state_bytes": [2048, 8192]})
    fig = figs.memory_figure(table)
    assert list(fig.data[0].x) == ["LIFT", "full FT"] and list(fig.data[1].y) == [2.0, 8.0]


def test_progress_and_optimizer_state_of_a_running_record(tmp_path):
    record = read_run(write_run(tmp_path / "r", "lift", 0, finished=False))
    nums = run_data.progress_numbers(record, 60)
    assert nums["done"] == 30 and nums["eta"] == pytest.approx(3.0)  # 0.1 s/step, 30 left
    assert run_data.optimizer_state_bytes(record) == (39424 * 12, False)  # estimated
    done = read_run(write_run(tmp_path / "d", "full", 0))
    assert run_data.progress_numbers(done, 60)["eta"] is None
    assert run_data.optimizer_state_bytes(done) == (802816 * 8, True)


def test_read_record_tolerates_missing_and_partial(tmp_path):
    assert run_data.read_record(tmp_path / "nothing") is None
    path = write_run(tmp_path / "p", "lift", 0, finished=False)
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 31, "lo')  # the writer is mid-line
    assert run_data.read_record(path).metrics["step"].max() == 30
    assert run_data.long_metrics({}).empty


def test_tradeoff_points_from_the_latest_evaluation(tmp_path):
    record = read_run(write_run(tmp_path / "r", "lora", 0, finished=False))
    points = run_data.tradeoff_points({"lora": record})
    evals = record.metrics[record.metrics["source_acc"].notna()]
    assert points["forgetting"].iloc[0] == pytest.approx(evals["source_acc"].iloc[0] - evals["source_acc"].iloc[-1])


def test_workshop_findings_are_computed_from_the_runs(samples):
    points = method_table(runs_table(sorted(samples.iterdir())))
    facts = run_data.workshop_findings(points)
    assert set(facts) == {"accuracy", "forgetting", "selection", "memory"}
    assert "less than full FT" in facts["forgetting"]
    assert f"{802816 * 8 / (39424 * 12):.1f}x" in facts["memory"]
    # Swap the story: now LIFT forgets most, and the sentence follows the numbers.
    flipped = points.copy()
    flipped.loc[flipped["method"] == "lift", "forgetting_mean"] = 0.9
    assert "more than full FT" in run_data.workshop_findings(flipped)["forgetting"]
    assert "Highest here: full FT." in facts["accuracy"]
    noisy = points.copy()
    noisy["target_acc_std"] = 0.05  # every gap to full FT is now within one std
    assert "within one standard deviation of it" in run_data.workshop_findings(noisy)["accuracy"]
    only_lora = points[points["method"] == "lora"]
    assert set(run_data.workshop_findings(only_lora)) == {"accuracy"}


def test_legends_keep_the_given_order_and_crowded_loss_hides_its_legend(samples):
    names = [f"{m}-seed{s}" for m in ("random", "full", "lift", "lora") for s in (0, 1)]
    data = run_data.long_metrics(_records(samples, names))
    acc = figs.accuracy_figure(data)
    assert [t.name for t in acc.data if t.yaxis == "y"] == names
    assert figs.loss_figure(data).layout.showlegend is False  # 8 runs
    assert figs.loss_figure(data[data["label"].isin(names[:2])]).layout.showlegend is not False


def test_a_refresh_at_the_final_step_is_not_drawn(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0"]))
    assert list(figs.churn_figure(data, steps=60).data[0].x) == [20, 40]  # 60 trains nothing


def test_stopped_runs_are_marked_on_the_tradeoff_and_the_y_axis_tops_at_a_gridline(tmp_path):
    done = read_run(write_run(tmp_path / "d", "lift", 0))
    stopped = write_run(tmp_path / "s", "lora", 0, status="stopped")
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "steps_done": 40}))
    points = run_data.tradeoff_points({"lift": done, "lora": read_run(stopped)})
    assert points["note"].isna().iloc[0] and points["note"].iloc[1].startswith("stopped at step 40 of 60")
    fig = figs.tradeoff_figure(points)
    assert fig.data[0].marker.symbol == "circle" and fig.data[1].marker.symbol == "circle-open"
    assert "stopped at step 40" in fig.data[1].text[0]
    low, high = fig.layout.yaxis.range
    top = max(100 * points["target_acc"])  # the top gridline is above every point
    assert high >= top and any(top <= t <= high for t in np.arange(0, 101, fig.layout.yaxis.dtick))


def test_log_loss_ticks_are_written_in_full(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0"]))
    axis = figs.loss_figure(data, log_y=True).layout.yaxis
    assert "0.2" in axis.ticktext and "0.5" in axis.ticktext and "1" in axis.ticktext


def test_stopped_heading_says_where_it_stopped(tmp_path):
    stopped = write_run(tmp_path / "s", "lift", 0, status="stopped")
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "steps_done": 40}))
    assert run_data.ended_label(read_run(stopped), "lift, 60 steps") == "lift, stopped at step 40 of 60"
    done = read_run(write_run(tmp_path / "d", "lift", 0))
    assert run_data.ended_label(done, "lift, 60 steps") == "lift, 60 steps"


def test_raw_loss_is_visible_and_the_x_axis_can_be_wall_time(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0"]))
    fig = figs.loss_figure(data, x="elapsed", steps=60)
    assert fig.data[0].opacity >= 0.5 and fig.data[0].line.width >= 1.2
    assert fig.data[0].x[0] == pytest.approx(1.1) and "wall time" in fig.layout.xaxis.title.text
    assert fig.layout.xaxis.range is None  # a step range means nothing in seconds
    acc = figs.accuracy_figure(data, x="elapsed")
    assert acc.data[0].x[0] == pytest.approx(1.0)


def test_learning_rate_and_memory_series(samples):
    data = run_data.long_metrics(_records(samples, ["lift-seed0", "full-seed0"]))
    lr = figs.series_figure(data, "lr", title="LR", y_title="learning rate", steps=60)
    assert [t.name for t in lr.data] == ["lift-seed0", "full-seed0"] and len(lr.data[0].x) == 60
    data["memory"] = 2.0 ** 20 * data["step"]
    mem = figs.series_figure(data, "memory", title="M", y_title="MiB", scale=2 ** -20)
    assert mem.data[0].y[-1] == 60
    empty = figs.series_figure(data.drop(columns="memory"), "memory", title="M", y_title="MiB")
    assert not empty.data and "no MiB recorded yet" in empty.layout.annotations[0].text


def test_workshop_text_follows_the_records(samples, tmp_path):
    records = _records(samples, ["lift-seed0", "lift-seed1", "full-seed0"])
    assert run_data.refresh_interval_text(records, 100) == "every 20 steps"
    assert run_data.refresh_interval_text({}, 100) == "every 100 steps"
    said = run_data.duration_sentence(300, {}, records)
    assert "at the pace of the recorded LIFT sample runs" in said
    other = read_run(write_run(tmp_path / "lora-1", "lora", 0))
    assert "the latest run on this machine (lora-1)" in run_data.duration_sentence(300, {"o": other}, records)
    demo = read_run(write_run(tmp_path / "demo-1", "lift", 0))
    said = run_data.duration_sentence(300, {"o": other, "d": demo}, records)
    assert "the last demo on this machine took 0:10" in said


def test_config_diff_filter_and_differing_settings(samples):
    records = _records(samples, ["lift-seed0", "lift-seed1", "full-seed0"])
    diff = run_data.config_diff(records)
    assert {"method", "seed", "lr_used", "budget.trainable_params"} <= set(diff.index)
    assert "steps" not in diff.index and list(diff.columns) == list(records)
    assert run_data.config_diff(_records(samples, ["lift-seed0"])).empty
    table = runs_table(sorted(samples.iterdir()))
    table.insert(0, "label", table["run"])
    assert run_data.differing_settings(table) == ["lr"]  # same steps and settings, LRs per method
    assert set(run_data.filter_runs(table, "LIFT seed1")["run"]) == {"lift-seed1"}
    assert len(run_data.filter_runs(table, "", ["completed"])) == len(table)


def test_setup_phase_follows_the_record(tmp_path):
    assert run_data.setup_phase(None) == 0  # no config.json yet: model and masks
    run = write_run(tmp_path / "r", "lift", 0, finished=False)
    (run / "metrics.jsonl").write_text("")
    assert run_data.setup_phase(read_run(run)) == 1  # evaluating before training
    assert run_data.setup_phase(read_run(write_run(tmp_path / "s", "lift", 0, finished=False))) == 2


def test_the_elapsed_clock_of_an_ended_job_stops_at_its_last_write(tmp_path):
    import os
    import time

    from lift_core.runs.jobs import Job
    from lift_ui.live_panel import wall_elapsed

    run = write_run(tmp_path / "r", "lift", 0)
    started = time.time() - 300
    for name in ("metrics.jsonl", "summary.json"):  # written 223 s after the launch
        os.utime(run / name, (started + 223, started + 223))
    job = Job("j", "lift, 60 steps", ["x"], [str(run)], pid=2 ** 22 + 7, pid_start="gone",
              started=started, log_path=str(tmp_path / "log"))
    assert not job.is_alive()
    # The record's own clock says 7 s (fake elapsed); the job's clock is what the bar showed.
    assert wall_elapsed(job, read_run(run)) == pytest.approx(223, abs=1)
    assert run_data.progress_numbers(read_run(run), 60, wall_elapsed(job, read_run(run)))["elapsed"] >= 223


def test_evaluation_due_names_the_step_being_evaluated(tmp_path):
    record = read_run(write_run(tmp_path / "r", "lift", 0, finished=False))  # 30 of 60, every 20
    assert run_data.evaluation_due(record, 60) is None  # step 31 trains
    record.metrics = record.metrics[record.metrics["step"] <= 19]
    assert run_data.evaluation_due(record, 60) == 20


def test_generations_table_pairs_the_first_and_latest_answers():
    def kept(step, answer):
        return [{"task": task, "prompt": f"{task} q{i}", "answer": answer, "gold": "7",
                 "correct": answer == "7"} for task in ("source", "target") for i in range(2)]

    metrics = pd.DataFrame([{"step": 0, "target_acc": 0.0, "generations": kept(0, "1")},
                            {"step": 1, "loss": 1.0},
                            {"step": 2, "target_acc": 0.5, "generations": kept(2, "4")},
                            {"step": 4, "target_acc": 1.0, "generations": kept(4, "7")}])
    table = figs.generations_table(metrics)
    assert list(table.columns) == figs.GENERATION_COLUMNS
    assert table["step"].tolist() == [0, 4] * 4  # the same prompt before and now, side by side
    assert table["task"].tolist()[:4] == ["target"] * 4 and table["prompt"].tolist()[:2] == ["target q0"] * 2
    assert table["correct"].tolist()[:2] == [False, True]
    assert figs.generations_table(metrics, latest_only=True)["step"].unique().tolist() == [4]
    assert figs.generations_table(metrics.drop(columns="generations")).empty


def test_evaluation_progress_is_read_only_while_a_run_evaluates(tmp_path):
    run = write_run(tmp_path / "run", "lift", 0, finished=False)
    assert run_data.evaluation_progress(read_run(run)) is None  # no progress.json yet
    (run / "progress.json").write_text(json.dumps({"phase": "evaluating", "step": 40, "done": 3, "total": 8}))
    assert run_data.evaluation_progress(read_run(run))["done"] == 3
    (run / "progress.json").write_text(json.dumps({"phase": "training", "step": 40}))
    assert run_data.evaluation_progress(read_run(run)) is None
    (run / "progress.json").write_text("{not json")
    assert run_data.evaluation_progress(read_run(run)) is None


def test_points_at_0_and_100_percent_are_drawn_whole(tmp_path, samples):
    """Accuracy axes leave room past 0 and 100 % and no trace clips its markers at the plot
    edge (a stopped run's hollow point at 0 % sat half-drawn on the axis, issue 14)."""
    fig = figs.accuracy_figure(run_data.long_metrics(_records(samples, ["lift-seed0"])), steps=60)
    for axis in (fig.layout.yaxis, fig.layout.yaxis2):
        low, high = axis.range
        assert low <= -3 and high >= 103
    assert all(t.cliponaxis is False for t in fig.data)
    stopped = write_run(tmp_path / "s", "lora", 0, status="stopped")
    points = run_data.tradeoff_points({"lift": read_run(write_run(tmp_path / "d", "lift", 0)),
                                       "lora": read_run(stopped)})
    points.loc[1, ["target_acc", "forgetting"]] = [0.0, 0.0]  # stopped before learning anything
    fig = figs.tradeoff_figure(points)
    assert all(t.cliponaxis is False for t in fig.data)
    assert fig.layout.yaxis.range[0] < 0 and fig.layout.xaxis.range[0] < 0  # 0 % lies inside
