"""LIFT_MODEL_ROOTS / LIFT_DATA_ROOTS: a shared server reads only the folders it allows."""

import json

import pytest

from lift_core.allowed_paths import DATA_ROOTS_ENV, allowed_roots, confine
from lift_core.errors import LiftError
from lift_core.train.config import FinetuneConfig


def _data_file(folder, name="train.jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"instruction": "1+1", "output": "2"}) + "\n")
    return path


def test_no_variable_means_no_limit(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    assert allowed_roots(DATA_ROOTS_ENV) is None
    assert confine(str(tmp_path), DATA_ROOTS_ENV, "data file", "data folders", "x") == tmp_path


def test_data_file_inside_the_roots_is_accepted(monkeypatch, tmp_path):
    inside = _data_file(tmp_path / "allowed")
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path / "allowed"))
    assert FinetuneConfig(train_data=str(inside)).train_data == str(inside)


@pytest.mark.parametrize("exists", [True, False])
def test_data_file_outside_is_refused_alike_whether_or_not_it_exists(monkeypatch, tmp_path, exists):
    outside = _data_file(tmp_path / "secret") if exists else tmp_path / "secret" / "none.jsonl"
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path / "allowed"))
    with pytest.raises(LiftError) as info:
        FinetuneConfig(target_eval=str(outside))
    assert str(info.value) == (f"data file {outside} is outside the allowed data folders "
                               f"({DATA_ROOTS_ENV}); put the file in one of them")


def test_dot_dot_and_symlinks_cannot_escape(monkeypatch, tmp_path):
    secret = _data_file(tmp_path / "secret")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link.jsonl").symlink_to(secret)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(allowed))
    for sneaky in (allowed / "link.jsonl", allowed / ".." / "secret" / "train.jsonl"):
        with pytest.raises(LiftError, match="outside the allowed data folders"):
            FinetuneConfig(source_eval=str(sneaky))
