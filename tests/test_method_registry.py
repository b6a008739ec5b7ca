"""The method registry is the one source of a method's identity: every list derives from it.

Each entry trains on the tiny Llama fixture; the CLI's choices, the compare queue, the config
checks, the app's lists, labels, colours and default LRs equal the registry's; a method added
to the registry (monkeypatched) shows up in all of them and trains.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lift_core.cli import compare as compare_cli
from lift_core.cli.main import build_parser
from lift_core.errors import LiftError
from lift_core.lowrank.masks import MASK_STRATEGIES
from lift_core.models.loading import load_model
from lift_core.models.preflight import estimate_training_memory
from lift_core.train import methods
from lift_core.train.config import FinetuneConfig
from lift_core.train.registry import (
    METHOD_REGISTRY,
    Method,
    compared_by_default,
    default_lr,
    get_method,
    method_color,
    method_label,
    method_names,
    methods_help,
)
from lift_ui.figures import explorer as figures
from lift_ui.figures import training as figures_training

APP = str(Path(__file__).resolve().parents[1] / "app.py")
# A new sparse method is one registry entry: its mask function already exists.
TOY = Method("toy_magnitude", "toy", "#123456", 5e-3, "a toy entry added by a test",
             mask="magnitude")


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(METHOD_REGISTRY, TOY.name, TOY)
    return TOY


def _method_choices() -> tuple:
    """The choices of ``finetune --method``, as argparse holds them."""
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    finetune = commands.choices["finetune"]
    return tuple(next(a for a in finetune._actions if a.dest == "method").choices)


def test_every_record_is_complete_and_consistent():
    assert list(METHOD_REGISTRY) == [m.name for m in METHOD_REGISTRY.values()]
    labels = [m.label for m in METHOD_REGISTRY.values()]
    colors = [m.color for m in METHOD_REGISTRY.values()]
    assert len(set(labels)) == len(labels) and len(set(colors)) == len(colors)
    for m in METHOD_REGISTRY.values():
        assert re.fullmatch(r"#[0-9a-f]{6}", m.color), m.name
        assert m.default_lr > 0 and m.description and not set("\n;") & set(m.description)
        assert m.mask is None or m.mask in MASK_STRATEGIES
        assert m.state_bytes_per_number == (12 if m.kind == "sparse" else 8)
    assert {m.mask for m in METHOD_REGISTRY.values() if m.mask} == set(MASK_STRATEGIES)
    with pytest.raises(ValueError, match="both a mask and an adapter"):
        Method("x", "x", "#000000", 1e-3, "x", mask="lift", adapter=get_method("lora").adapter)


def test_unknown_names_are_one_line_errors_and_neutral_in_charts():
    with pytest.raises(LiftError, match=r"unknown method 'galore' \(allowed: lift, full, lora, "):
        get_method("galore")
    assert method_label("galore") == "galore" and method_color("galore") == "#444444"


def test_derived_lists_equal_the_registry():
    assert methods.METHODS == method_names() == tuple(METHOD_REGISTRY)
    assert methods.SPARSE_METHODS == tuple(n for n, m in METHOD_REGISTRY.items() if m.mask)
    assert methods.DEFAULT_LRS == {n: m.default_lr for n, m in METHOD_REGISTRY.items()}
    assert compare_cli.DEFAULT_METHODS == compared_by_default() == (
        "lift", "full", "lora", "magnitude", "random")
    assert _method_choices() == method_names()
    assert FinetuneConfig.choices()["method"] == method_names()
    for name, m in METHOD_REGISTRY.items():
        assert figures.COLORS[name] == figures_training.METHOD_COLORS[name] == m.color
        assert name in methods_help() and m.description in methods_help()
    assert figures.MASK_LABELS == {m.mask: m.label for m in METHOD_REGISTRY.values() if m.mask}


def test_the_finetune_help_reads_the_descriptions(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even at hyphens
    for m in METHOD_REGISTRY.values():
        assert "".join(f"{m.name}: {m.description}".split()) in text


@pytest.mark.parametrize("name", list(METHOD_REGISTRY))
def test_every_method_trains_three_steps_on_the_tiny_llama(tiny_llama_dir, name):
    model = load_model(str(tiny_llama_dir), kind="causal")
    setup = methods.setup_method(model, name, lr=default_lr(name), lora_rank=2, filter_rank=2,
                                 update_interval=2)
    trainable = [p for group in setup.optimizer.param_groups for p in group["params"]]
    before = [p.detach().clone() for p in trainable]
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(3):
        loss = setup.model(input_ids=ids, labels=ids).loss
        loss.backward()
        setup.optimizer.step()
        setup.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(p.detach(), old) for p, old in zip(trainable, before))
    assert setup.trainable_params == sum(row["k"] for row in setup.layers)
    assert setup.optimizer.state_bytes() == (
        get_method(name).state_bytes_per_number * setup.trainable_params)


def test_a_method_added_to_the_registry_reaches_the_cli_config_and_trainer(toy_registered, tiny_llama_dir):
    assert TOY.name in _method_choices()
    assert compare_cli.parse_methods(f"lift,{TOY.name}") == ["lift", TOY.name]
    config = FinetuneConfig(method=TOY.name)
    assert config.lr_used == 5e-3 and TOY.name in FinetuneConfig.choices()["method"]
    assert f"{TOY.name}: {TOY.description}" in methods_help()
    assert figures_training.method_color(TOY.name) == "#123456"
    assert method_label(TOY.name) == "toy"
    model = load_model(str(tiny_llama_dir), kind="causal")
    estimate = estimate_training_memory(model, TOY.name, 2)
    setup = methods.setup_method(model, TOY.name, lr=5e-3, lora_rank=2, filter_rank=2,
                                 update_interval=10)
    assert setup.trainable_params == estimate.trainable_params
    assert all(group["mask"] == "magnitude" for group in setup.optimizer.param_groups)


def _finetune_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run().switch_page("pages/finetune.py").run()
    assert not at.exception, at.exception
    return at


def test_the_app_lists_are_the_registry_and_grow_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "no_samples"))
    at = _finetune_page()
    picker = at.selectbox(key="_w_ft_method")
    assert tuple(picker.options) == tuple(f"{n} (default lr {default_lr(n):g})" for n in method_names())
    assert all(m.description in picker.help for m in METHOD_REGISTRY.values())
    queue = at.multiselect(key="ft_compare_methods")
    assert tuple(queue.options) == method_names()
    assert tuple(queue.value) == compared_by_default()
    for name in ("pissa", "dora"):  # the new baselines launch from the form like the others
        at.selectbox(key="_w_ft_method").set_value(name).run()
        assert f"--method {name} --lr {default_lr(name):g}" in at.code[0].value
    monkeypatch.setitem(METHOD_REGISTRY, TOY.name, TOY)
    at = _finetune_page()
    assert TOY.name in at.multiselect(key="ft_compare_methods").options
    at.selectbox(key="_w_ft_method").set_value(TOY.name).run()
    assert f"--method {TOY.name} --lr 0.005" in at.code[0].value
