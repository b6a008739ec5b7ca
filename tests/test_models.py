"""Model loading from embedded aliases and local directories, layer listing, load errors."""

import json
import os

import pytest
import torch
from torch import nn

from lift_core.errors import LiftError
from lift_core.models.loading import (
    check_fits_in_memory,
    is_causal_lm,
    layer_role,
    layer_weight,
    layers_table,
    list_linear_layers,
    load_config,
    load_model,
    load_tokenizer,
    resolve_model_source,
)


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


def test_minilm_loads_offline_with_real_weights(minilm):
    layers = list_linear_layers(minilm)
    assert len(layers) == 37  # 6 blocks x (q, k, v, o, up, down) + pooler
    roles = [l.role for l in layers if l.block == 0]
    assert roles == ["q", "k", "v", "o", "up", "down"]
    up = next(l for l in layers if l.role == "up")
    assert up.shape == (1536, 384) and up.numel == 1536 * 384
    # Real pretrained weights are not an i.i.d. init: the top singular value stands far
    # above the rest (a random 384x384 matrix has s1/s10 close to 1).
    s = torch.linalg.svdvals(layer_weight(minilm, layers[0]))
    assert s[0] / s[50] > 1.5


def test_blocks_only_drops_pooler(minilm):
    names = [l.name for l in list_linear_layers(minilm, blocks_only=True)]
    assert len(names) == 36 and "pooler.dense" not in names


def test_layers_table_columns(minilm):
    table = layers_table(minilm)
    assert list(table.columns) == ["layer", "block", "role", "out", "in", "params"]
    assert table.params.sum() == sum(l.numel for l in list_linear_layers(minilm))


def test_llama_roles_and_causal_detection(tiny_llama_dir):
    model = load_model(str(tiny_llama_dir), kind="causal")
    roles = [l.role for l in list_linear_layers(model) if l.block == 1]
    assert roles == ["q", "k", "v", "o", "gate", "up", "down"]
    assert list_linear_layers(model)[-1].role == "lm_head"
    assert is_causal_lm(load_config(str(tiny_llama_dir)))
    k = next(l for l in list_linear_layers(model) if l.role == "k")
    assert k.shape == (16, 32)  # 2 kv heads x 8 dims, from 32 inputs


def test_gpt2_conv1d_is_viewed_out_in(tiny_gpt2_dir):
    model = load_model(str(tiny_gpt2_dir))
    layers = {l.role: l for l in list_linear_layers(model) if l.block == 0}
    assert set(layers) == {"qkv", "o", "up", "down"}
    qkv = layers["qkv"]
    assert qkv.transposed and qkv.shape == (96, 32)
    w = layer_weight(model, qkv)
    stored = model.get_submodule(qkv.name).weight
    assert w.shape == (96, 32) and torch.equal(w, stored.t())


def test_encoder_cannot_be_loaded_as_causal(tiny_bert_dir):
    with pytest.raises(LiftError, match="can be explored but not fine-tuned"):
        load_model(str(tiny_bert_dir), kind="causal")
    assert list_linear_layers(load_model(str(tiny_bert_dir)))  # exploring works


def test_minilm_tokenizer_loads():
    tok = load_tokenizer("minilm")
    assert tok("principal weights")["input_ids"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "no model given"),
        ("/no/such/dir", "does not exist"),
        ("./missing-model", "does not exist"),
        ("nobody/no-such-model-xyz", "could not reach the Hugging Face hub"),
    ],
)
def test_bad_model_names(name, message):
    with pytest.raises(LiftError, match=message):
        load_model(name)


def test_directory_without_config(tmp_path):
    with pytest.raises(LiftError, match="no config.json"):
        resolve_model_source(str(tmp_path))


def test_directory_without_safetensors(tmp_path, tiny_llama_dir):
    (tmp_path / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(LiftError, match="no .safetensors weights"):
        load_model(str(tmp_path))


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("x")
    with pytest.raises(LiftError, match="is a file"):
        load_model(str(f))


def test_broken_config_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(LiftError) as info:
        load_model(str(tmp_path))
    assert "\n" not in str(info.value)


def test_model_too_large_is_refused_from_config(tmp_path, tiny_llama_dir, monkeypatch):
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    config.update(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                  num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                  head_dim=128)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr("lift_core.models.loading.available_memory_bytes", lambda: 16 * 2**30)
    with pytest.raises(LiftError, match=r"70\.\d+B parameters"):
        check_fits_in_memory(load_config(str(tmp_path)))


def test_model_without_linear_layers():
    with pytest.raises(LiftError, match="no linear layers"):
        list_linear_layers(nn.Sequential(nn.Embedding(4, 4), nn.LayerNorm(4)))


def test_unknown_layer_name(minilm):
    with pytest.raises(LiftError, match="no layer named"):
        layer_weight(minilm, "encoder.layer.99.query")


@pytest.mark.parametrize(
    "name, role",
    [
        ("transformer.h.0.attn.c_proj", "o"),
        ("transformer.h.0.mlp.c_proj", "down"),
        ("encoder.layer.0.attention.output.dense", "o"),
        ("encoder.layer.0.output.dense", "down"),
        ("model.layers.3.mlp.gate_proj", "gate"),
        ("model.decoder.layers.0.fc1", "up"),
        ("pooler.dense", "dense"),
    ],
)
def test_layer_roles(name, role):
    assert layer_role(name) == role


def test_missing_tokenizer_is_one_complete_line(tiny_llama_dir):
    # Issue 9: the message stopped at "Couldn't instantiate the backend tokenizer from one of:".
    with pytest.raises(LiftError) as info:
        load_tokenizer(str(tiny_llama_dir))
    text = str(info.value)
    assert "\n" not in text and not text.rstrip().endswith(":")
    assert "no tokenizer" in text and "save_pretrained" in text


def test_remote_code_without_opt_in_says_how_to_opt_in(tmp_path, tiny_llama_dir):
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    config.update(model_type="tiny-remote", auto_map={"AutoConfig": "configuration_tiny.TinyConfig"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(LiftError, match="--trust-remote-code") as info:
        load_config(str(tmp_path))
    assert "\n" not in str(info.value)


@pytest.fixture
def model_roots(tmp_path, tiny_llama_dir, monkeypatch):
    """LIFT_MODEL_ROOTS = tmp_path/allowed, holding a copy of the tiny Llama (and a way out)."""
    import shutil

    allowed = tmp_path / "allowed"
    shutil.copytree(tiny_llama_dir, allowed / "llama")
    (allowed / "escape").symlink_to(tiny_llama_dir, target_is_directory=True)
    monkeypatch.setenv("LIFT_MODEL_ROOTS", f"{tmp_path / 'elsewhere'}{os.pathsep}{allowed}")
    return allowed


def test_model_roots_allow_directories_inside_them(model_roots):
    # The checked path (symlinks and .. resolved) is the one that loads.
    assert resolve_model_source(str(model_roots / "llama")) == str((model_roots / "llama").resolve())
    assert load_model(str(model_roots / "llama")) is not None
    assert resolve_model_source("builtin")  # embedded models are always allowed


@pytest.mark.parametrize("where", ["outside", "missing", "symlink", "dotdot", "file"])
def test_model_roots_refuse_everything_else_with_one_message(model_roots, tiny_llama_dir, where):
    name = {
        "outside": str(tiny_llama_dir),  # exists
        "missing": "/no/such/model/dir",  # does not
        "symlink": str(model_roots / "escape"),  # inside by name, outside once resolved
        "dotdot": str(model_roots / ".." / ".." / tiny_llama_dir.name),
        "file": "/etc/hostname",
    }[where]
    with pytest.raises(LiftError) as info:
        load_model(name)
    # The same words whether or not the path exists: the app must not reveal that.
    assert str(info.value) == (f"model path {name} is outside the allowed model folders "
                               "(LIFT_MODEL_ROOTS); use a directory under them, an embedded "
                               "model or a hub id")


# --- issue 15 item 5: roles of fused and Falcon layers, the layers table, <eos> ----------


def _tiny(config_class, **settings):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config_class(**settings))


def test_phi3_fused_gate_up_is_labelled_gate_up():
    from transformers import Phi3Config

    model = _tiny(Phi3Config, vocab_size=64, hidden_size=32, intermediate_size=48,
                  num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                  pad_token_id=0, eos_token_id=1, bos_token_id=1)
    roles = {l.role: l.shape for l in list_linear_layers(model) if l.block == 0}
    assert roles["gate_up"] == (2 * 48, 32) and "gate" not in roles
    assert set(roles) == {"qkv", "o", "gate_up", "down"}


def test_falcon_attention_dense_is_labelled_o():
    from transformers import FalconConfig

    model = _tiny(FalconConfig, vocab_size=64, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=4)
    roles = [l.role for l in list_linear_layers(model) if l.block == 0]
    assert roles == ["qkv", "o", "up", "down"]


def test_layers_table_blocks_are_integers_with_none_outside(minilm):
    table = layers_table(minilm)
    assert str(table.block.dtype) == "Int64"
    assert table.block.iloc[0] == 0 and table.block.isna().sum() == 1  # the pooler


def test_layers_cli_prints_integer_blocks_and_no_loading_bar(capsys):
    from lift_core.cli.main import main

    assert main(["layers", "--model", "minilm"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[1].split()[1] == "0" and "0.0" not in out and "NaN" not in out
    assert lines[-1].split()[:2] == ["pooler.dense", "dense"]  # blank block outside
    assert "Loading weights" not in err + out


def test_layers_into_a_closed_pipe_exits_quietly():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "lift_core", "layers", "--model", "minilm"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` that has read its lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err


def test_tokenizer_without_eos_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    from lift_core.models.builtin import BuiltinRecipe, build_config, build_tokenizer
    from lift_core.train.config import FinetuneConfig
    from lift_core.train.loop import finetune

    tokenizer = build_tokenizer()
    recipe = BuiltinRecipe(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=48)
    LlamaForCausalLM(build_config(recipe, tokenizer)).save_pretrained(tmp_path / "m")
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path / "m")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("lift_core.models.loading.load_model", no_loading)
    out = tmp_path / "run"
    with pytest.raises(LiftError, match="no end-of-sequence token"):
        finetune(FinetuneConfig(model=str(tmp_path / "m"), steps=1, out_dir=str(out)))
    assert not out.exists()  # no failed run folder left behind
