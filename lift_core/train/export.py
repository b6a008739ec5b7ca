"""Keeping what a run trained: the model, a sparse method's delta, a LoRA-family adapter.

At the end of a completed run with ``save`` (:func:`save_run_outputs`):

- full and sparse methods: ``RUN_DIR/model/`` (``save_pretrained``, safetensors, with the
  tokenizer), loadable by ``AutoModelForCausalLM.from_pretrained`` and ``--model``;
- sparse methods also ``RUN_DIR/delta.safetensors``: per trained matrix the flat indices of
  every entry whose bits changed (the union over mask refreshes) and their new values, with
  the base's name and a sha256 of its block-linear weights; :func:`apply_delta` rebuilds the
  tuned model bit-exactly from the base and refuses another base; the same update also as
  peft's SHiRA adapter in ``RUN_DIR/shira/`` where peft's format can hold it;
- the LoRA family: the peft adapter in ``RUN_DIR/adapter/`` (PiSSA's converted to a plain
  LoRA of rank 2r that loads onto the original base), and with ``merge`` the merged full
  weights in ``RUN_DIR/model/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

from lift_core.errors import LiftError
from lift_core.train.registry import get_method

DELTA_FILE = "delta.safetensors"
DELTA_FORMAT = "lift-delta/1"
MODEL_DIR, ADAPTER_DIR, SHIRA_DIR = "model", "adapter", "shira"
# PiSSA's adapter as initialised (before training), kept while the run goes on so that the
# trained adapter can be converted to a LoRA for the original base (peft's recipe).
# peft loads it as an adapter named after the last path part, which must be a plain name.
PISSA_INITIAL_DIR = ".lift-pissa/initial"

# Same-width integer views, so "changed" means "different bits" (0.0 vs -0.0 included).
_INT_VIEWS = {torch.float32: torch.int32, torch.float16: torch.int16,
              torch.bfloat16: torch.int16, torch.float64: torch.int64}


def block_linear_weights(model) -> dict[str, torch.Tensor]:
    """The weights of the block linears (what every method trains), by module name (a
    mixture-of-experts block's experts: their one 3-D parameter, by its path)."""
    from lift_core.models.loading import layer_parameter
    from lift_core.train.methods import block_linear_names

    return dict(layer_parameter(model, name) for name in block_linear_names(model))


def base_hash(model) -> str:
    """sha256 over the block linears' names, dtypes, shapes and bytes, in model order."""
    digest = hashlib.sha256()
    for name, weight in block_linear_weights(model).items():
        tensor = weight.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def changed_entries(base: torch.Tensor, tuned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (int32 where they fit) where ``tuned``'s bits differ from ``base``'s, and tuned's values."""
    base, tuned = base.detach().to("cpu").reshape(-1), tuned.detach().to("cpu").reshape(-1)
    view = _INT_VIEWS.get(tuned.dtype)
    differs = (base.view(view) != tuned.view(view)) if view else (base != tuned)
    indices = differs.nonzero().reshape(-1)
    values = tuned[indices].contiguous()
    # int32 halves the indices' bytes wherever they fit (every matrix short of 2**31 entries)
    return (indices.to(torch.int32) if tuned.numel() < 2**31 else indices), values


def save_delta(base_model, tuned_model, path: str | os.PathLike, *, base_name: str,
               method: str) -> dict:
    """Write the sparse delta of ``tuned_model`` against ``base_model`` to ``path``.

    Returns:
        ``{"entries": changed entries, "bytes": file size}``.
    """
    from safetensors.torch import save_file

    tensors, entries = {}, 0
    tuned = block_linear_weights(tuned_model)
    for name, weight in block_linear_weights(base_model).items():
        indices, values = changed_entries(weight, tuned[name])
        tensors[f"{name}.indices"], tensors[f"{name}.values"] = indices, values
        entries += indices.numel()
    metadata = {"format": DELTA_FORMAT, "base": base_name, "base_sha256": base_hash(base_model),
                "method": method, "entries": str(entries)}
    save_file(tensors, str(path), metadata=metadata)
    return {"entries": entries, "bytes": os.path.getsize(path)}


def apply_delta(base: str, delta: str | os.PathLike, out_dir: str | os.PathLike, *,
                trust_remote_code: bool = False) -> dict:
    """Rebuild a tuned model from ``base`` (alias, folder or hub id) and a delta file.

    Returns:
        ``{"entries", "layers"}`` applied.

    Raises:
        LiftError: the delta is not one, or ``base``'s block linears are not its base's.
    """
    from safetensors import safe_open

    from lift_core.models.loading import load_model, load_tokenizer
    from lift_core.models.preflight import check_output_dir

    check_output_dir(str(out_dir))
    try:
        with safe_open(str(delta), framework="pt") as fh:
            metadata, tensors = fh.metadata() or {}, {k: fh.get_tensor(k) for k in fh.keys()}
    except (OSError, ValueError, RuntimeError) as exc:
        raise LiftError(f"cannot read delta file {delta}: {str(exc).splitlines()[0]}") from None
    if metadata.get("format") != DELTA_FORMAT:
        raise LiftError(f"{delta} is not a LIFT delta (format {metadata.get('format')!r}, "
                        f"expected {DELTA_FORMAT})")
    model = load_model(base, kind="causal", trust_remote_code=trust_remote_code)
    found = base_hash(model)
    if found != metadata["base_sha256"]:
        raise LiftError(f"base {base} is not the model this delta was trained from (its weights' "
                        f"sha256 {found[:12]}... differs from {metadata['base_sha256'][:12]}..., "
                        f"base {metadata.get('base')}); pass that base")
    weights, entries = block_linear_weights(model), 0
    with torch.no_grad():
        for name, weight in weights.items():
            indices, values = tensors[f"{name}.indices"], tensors[f"{name}.values"]
            weight.view(-1)[indices.to(weight.device, torch.long)] = values.to(weight.device)
            entries += indices.numel()
    _save_pretrained(model, load_tokenizer(base, trust_remote_code=trust_remote_code), out_dir)
    return {"entries": entries, "layers": len(weights)}


def save_shira(base_model, tuned_model, out_dir: str | os.PathLike) -> int | str:
    """Write the sparse update of ``tuned_model`` as peft's SHiRA adapter on ``base_model``.

    peft's SHiRA keeps exactly r*(m+n) entries per matrix for one r; r is the smallest that
    holds every matrix's changed entries, the rest padded with zero-valued entries.
    ``base_model`` is wrapped in place (pass a copy you no longer need).

    Returns:
        The SHiRA rank r, or why no adapter was written (r*(m+n) would exceed some m*n).
    """
    from peft import ShiraConfig, get_peft_model

    tuned, masks, deltas, r = block_linear_weights(tuned_model), {}, {}, 1
    for name, weight in block_linear_weights(base_model).items():
        if weight.dim() != 2:
            return f"SHiRA adapts 2-D linear weights; {name} is {weight.dim()}-D (experts)"
        indices, values = changed_entries(weight, tuned[name])
        deltas[name] = (indices.long(), values - weight.detach().reshape(-1)[indices.long()])
        m, n = weight.shape
        r = max(r, -(-indices.numel() // (m + n)))
    for name, weight in block_linear_weights(base_model).items():
        (m, n), (indices, values) = weight.shape, deltas[name]
        if r * (m + n) > m * n:
            return (f"SHiRA needs r*(m+n) <= m*n; {indices.numel()} changed entries of "
                    f"{name} need r={r}")
        mask = torch.zeros(m * n, dtype=torch.bool)
        mask[indices] = True
        mask[(~mask).nonzero().reshape(-1)[: r * (m + n) - indices.numel()]] = True  # padding
        flat = torch.zeros(m * n, dtype=values.dtype)
        flat[indices] = values
        masks[id(weight)] = (mask.reshape(m, n), flat[mask])  # values in SHiRA's (row-major) order
    config = ShiraConfig(r=r, target_modules=list(deltas), init_weights=True)
    config.mask_fn = lambda layer, _r, **_: masks[id(layer.weight)][0].to(layer.weight)
    wrapped = get_peft_model(base_model, config)
    with torch.no_grad():
        for name, module in wrapped.named_modules():
            if hasattr(module, "shira_weight") and "default" in module.shira_weight:
                module.shira_weight["default"].copy_(masks[id(module.base_layer.weight)][1])
    wrapped.save_pretrained(str(out_dir))
    return r


def _save_pretrained(model, tokenizer, out_dir) -> None:
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))


def keep_pissa_initial(trainer, run_dir: str | os.PathLike) -> None:
    """Save PiSSA's initial adapter (before any step) for the conversion at the end."""
    if not _is_pissa(trainer.config.method):
        return
    model = trainer.unwrapped_model
    config = model.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True  # peft's recipe
    try:
        model.save_pretrained(str(Path(run_dir) / PISSA_INITIAL_DIR))
    finally:
        config.init_lora_weights = init


def _is_pissa(method: str) -> bool:
    spec = get_method(method)
    return spec.kind == "adapter" and str(spec.adapter.init).startswith("pissa")


def save_run_outputs(trainer, run_dir: str | os.PathLike) -> dict:
    """Save what ``trainer`` trained into ``run_dir`` (see the module docstring).

    Returns:
        What was written, for summary.json: ``{"saved": [...], "model_bytes", "delta_bytes",
        "delta_entries"}`` (the keys that apply).
    """
    run_dir, cfg = Path(run_dir), trainer.config
    kind, result = get_method(cfg.method).kind, {"saved": []}
    model = trainer.unwrapped_model
    if kind == "adapter":
        _save_adapter(trainer, run_dir)
        result["saved"].append(ADAPTER_DIR)
        if not cfg.merge:
            return result
        model = model.merge_and_unload()  # the run is over: merging in place is fine
    _save_pretrained(model, trainer.tokenizer, run_dir / MODEL_DIR)
    result["saved"].append(MODEL_DIR)
    result["model_bytes"] = _folder_bytes(run_dir / MODEL_DIR, ".safetensors")
    if kind == "sparse":
        from lift_core.models.loading import load_model

        base = load_model(cfg.model, kind="causal", trust_remote_code=cfg.trust_remote_code)
        delta = save_delta(base, model, run_dir / DELTA_FILE, base_name=cfg.model,
                           method=cfg.method)
        result["saved"].append(DELTA_FILE)
        result.update(delta_bytes=delta["bytes"], delta_entries=delta["entries"])
        try:
            shira = save_shira(base, model, run_dir / SHIRA_DIR)
        except (ValueError, RuntimeError, TypeError) as exc:  # peft refused: keep the rest
            shutil.rmtree(run_dir / SHIRA_DIR, ignore_errors=True)
            shira = f"peft could not build the SHiRA adapter: {str(exc).splitlines()[0]}"
        if isinstance(shira, int):
            result["saved"].append(SHIRA_DIR)
            result["shira_rank"] = shira
        else:
            result["shira_skipped"] = shira
    return result


def _save_adapter(trainer, run_dir: Path) -> None:
    initial = run_dir / PISSA_INITIAL_DIR
    kwargs = {}
    if _is_pissa(trainer.config.method) and initial.is_dir():
        kwargs["path_initial_model_for_weight_conversion"] = str(initial)
    trainer.unwrapped_model.save_pretrained(str(run_dir / ADAPTER_DIR), **kwargs)
    shutil.rmtree(initial.parent, ignore_errors=True)


def _folder_bytes(folder: Path, suffix: str) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.name.endswith(suffix))
