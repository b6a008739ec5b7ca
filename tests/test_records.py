"""Run records: refusing to overwrite, appending metrics, atomic summaries, tolerant reading."""

import json

import pytest

from lift_core.errors import LiftError
from lift_core.runs.records import (
    RECORD_FORMAT,
    TABLE_COLUMNS,
    RunWriter,
    list_runs,
    read_metrics,
    read_run,
    runs_table,
)


def _write_run(path, *, summary=True, rows=3):
    writer = RunWriter(path)
    writer.write_config({"method": "lift", "seed": 1, "lr_used": 1e-3, "steps": rows})
    for step in range(1, rows + 1):
        writer.append_metrics({"step": step, "loss": 1.0 / step, "lr": 1e-3, "elapsed": step})
    if summary:
        writer.write_summary({"status": "completed", "steps_done": rows, "target_acc": 0.5,
                              "source_acc": 0.9, "forgetting": float("nan")})
    else:
        writer.close()
    return path


def test_writer_creates_all_three_files_and_reads_back(tmp_path):
    run = _write_run(tmp_path / "run")
    record = read_run(run)
    assert record.config["format"] == RECORD_FORMAT and record.config["method"] == "lift"
    assert list(record.metrics["step"]) == [1, 2, 3]
    assert record.summary["status"] == "completed"
    assert record.summary["forgetting"] is None  # NaN is stored as null: valid JSON
    assert not list(run.glob(".*.tmp"))  # the atomic write left no temporary file


def test_metrics_are_flushed_line_by_line_while_running(tmp_path):
    writer = RunWriter(tmp_path / "live")
    writer.write_config({"method": "full"})
    writer.append_metrics({"step": 1, "loss": 2.0})
    assert read_run(tmp_path / "live").metrics["loss"].tolist() == [2.0]  # before close
    assert read_run(tmp_path / "live").summary is None
    writer.close()


def test_refuses_non_empty_directory_unless_overwrite(tmp_path):
    run = _write_run(tmp_path / "run")
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(LiftError, match="not empty.*--overwrite"):
        RunWriter(run)
    RunWriter(run, overwrite=True).close()
    assert (run / "notes.txt").read_text() == "keep me"  # only record files are replaced
    assert not (run / "summary.json").exists()


def test_refuses_a_file_as_out_dir(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(LiftError, match="is a file"):
        RunWriter(target)


def test_partial_last_line_is_ignored_but_a_broken_middle_line_is_reported(tmp_path):
    run = _write_run(tmp_path / "run", summary=False)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "lo')  # the writer was interrupted mid-line
    assert len(read_run(run).metrics) == 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
    with pytest.raises(LiftError, match="line 2"):
        read_metrics(run / "metrics.jsonl")


def test_list_runs_finds_nested_runs_and_skips_model_dirs(tmp_path):
    a = _write_run(tmp_path / "a")
    b = _write_run(tmp_path / "group" / "b", summary=False)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert list_runs(tmp_path, tmp_path / "missing") == [a, b]
    assert list_runs(a) == [a]


def test_runs_table_has_one_row_per_run(tmp_path):
    a = _write_run(tmp_path / "a")
    b = _write_run(tmp_path / "b", summary=False, rows=2)
    table = runs_table([a, b])
    assert list(table.columns) == TABLE_COLUMNS
    assert table["status"].tolist() == ["completed", "running"]
    assert table["steps_done"].tolist() == [3, 2]
    assert table.loc[0, "lr"] == 1e-3


def test_read_run_rejects_a_directory_without_a_record(tmp_path):
    with pytest.raises(LiftError, match="not a run directory"):
        read_run(tmp_path)


def test_overwrite_touches_only_the_record_and_its_stray_temporary_files(tmp_path):
    run = _write_run(tmp_path / "run")
    (run / "notes.txt").write_text("keep me")
    (run / ".summary.json.999-deadbeef.tmp").write_text("")  # left by a run killed mid-write
    writer = RunWriter(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [".lift-claim.json", "metrics.jsonl", "notes.txt"]
    writer.write_config({"method": "full"})
    writer.write_summary({"status": "completed"})
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl", "notes.txt", "summary.json"]


def test_atomic_writes_in_parallel_never_share_a_temporary_file(tmp_path):
    import threading

    from lift_core.jsonio import atomic_write

    errors = []

    def write(n):
        for i in range(50):
            try:
                atomic_write(tmp_path / "config.json", json.dumps({"writer": n, "i": i}))
            except Exception as exc:  # the old shared ".config.json.tmp" raced here
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and json.loads((tmp_path / "config.json").read_text())["i"] == 49
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
