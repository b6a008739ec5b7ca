"""A run's name, notes and tags (notes.json), and deleting runs to the trash and back."""

from __future__ import annotations

import pytest

from lift_core.errors import LiftError
from lift_core.runs.folder import foreign_entries
from lift_core.runs.notes import list_trash, parse_tags, read_notes, restore_run, trash_run, write_notes
from lift_core.runs.records import list_runs, runs_table
from tests.fake_runs import write_run


def test_notes_are_stored_beside_the_record_and_shown_in_the_table(tmp_path):
    run = write_run(tmp_path / "a", "lift", 0)
    assert read_notes(run) == {"name": "", "notes": "", "tags": []}
    write_notes(run, name=" baseline ", notes="first try", tags=parse_tags("lr, lr ,  seed0,"))
    assert read_notes(run) == {"name": "baseline", "notes": "first try", "tags": ["lr", "seed0"]}
    assert foreign_entries(run) == []  # a run folder may hold its notes (overwrite keeps them)
    row = runs_table([run]).iloc[0]
    assert (row["name"], row["tags"], row["update_interval"], row["eval_every"]) == ("baseline", "lr, seed0", 20, 20)
    with pytest.raises(LiftError, match="one line of at most 80"):
        write_notes(run, name="x" * 81)
    with pytest.raises(LiftError, match="not a run folder"):
        write_notes(tmp_path, name="x")


def test_trash_is_undoable_and_hides_the_run(tmp_path):
    root = tmp_path / "runs"
    run = write_run(root / "lift-1", "lift", 0)
    trash_id = trash_run(run, root)
    assert not run.exists() and list_runs(root) == []
    assert [e["path"] for e in list_trash(root)] == [str(run.resolve())]
    assert restore_run(root, trash_id) == run.resolve() and list_runs(root) == [run]
    assert list_trash(root) == []
    with pytest.raises(LiftError, match="no trashed run"):
        restore_run(root, trash_id)


def test_trash_refuses_running_runs_and_runs_elsewhere(tmp_path):
    root = tmp_path / "runs"
    running = write_run(root / "going", "lift", 0, finished=False)
    with pytest.raises(LiftError, match="still running"):
        trash_run(running, root)
    other = write_run(tmp_path / "samples" / "s", "lift", 0)
    with pytest.raises(LiftError, match="only runs made here"):
        trash_run(other, root)
    done = write_run(root / "done", "lift", 1)
    trash_id = trash_run(done, root)
    write_run(root / "done", "lift", 2)  # the old place is taken again
    with pytest.raises(LiftError, match="exists again"):
        restore_run(root, trash_id)
