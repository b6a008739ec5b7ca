"""A model's linear layers as (out, in) weight matrices: names, blocks, roles, experts.

Every linear layer (``nn.Linear`` and GPT-2's transposed ``Conv1D``) is listed with its
block index and role (q, k, v, o, gate, up, down, ...), and so is every expert matrix of a
mixture-of-experts block: transformers 5 stores a block's experts as one 3-D parameter
(experts, out, in), listed here as one (out, in) layer per expert, named
``<parameter path>[<expert>]``. Nothing here loads a model (see :mod:`.loading`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from lift_core.errors import LiftError

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
_EXPERT_NAME = re.compile(r"^(.*)\[(\d+)\]$")  # "<parameter path>[<expert index>]"


@dataclass(frozen=True)
class LinearLayer:
    """One linear layer of a model, described for tables and pickers."""

    name: str  # module path, e.g. "model.layers.0.self_attn.q_proj"
    block: int | None  # transformer block index, None outside the blocks
    role: str  # q, k, v, o, qkv, gate, up, down, lm_head, or the leaf name
    shape: tuple[int, int]  # (out, in), whatever the storage layout
    transposed: bool  # True for Conv1D, whose parameter is stored (in, out)
    expert: int | None = None  # index into a 3-D experts parameter (experts, out, in)

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def label(self) -> str:
        where = f"block {self.block}" if self.block is not None else "outside blocks"
        if self.expert is not None:
            where += f" · expert {self.expert}"
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
        match = _BLOCK_INDEX.search(f".{name}.")
        block = int(match.group(1)) if match else None
        if blocks_only and block is None:
            continue
        conv = _is_conv1d(module)
        if isinstance(module, nn.Linear) or conv:
            weight = module.weight
            shape = (weight.shape[1], weight.shape[0]) if conv else tuple(weight.shape)
            layers.append(LinearLayer(name, block, layer_role(name), shape, conv))
        for path, weight in _expert_parameters(name, module):
            role, shape = layer_role(path), tuple(weight.shape[1:])
            layers += [LinearLayer(f"{path}[{e}]", block, role, shape, False, e)
                       for e in range(weight.shape[0])]
    if not layers:
        raise LiftError(f"{type(model).__name__} has no linear layers to analyze")
    return layers


def _expert_parameters(name: str, module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    # Mixtral, Qwen-MoE, DeepSeek in transformers 5: an "experts" module holding 3-D
    # (experts, out, in) parameters, each expert applied as F.linear(x, weight[e]).
    if not name.split(".")[-1].endswith("experts"):
        return []
    return [(f"{name}.{leaf}", p) for leaf, p in module.named_parameters(recurse=False)
            if p.ndim == 3 and p.is_floating_point()]


def layer_parameter(model: nn.Module, layer: LinearLayer | str) -> tuple[str, nn.Parameter]:
    """(name, parameter) that holds the layer: the module's weight under the layer's own
    name, or for an expert ``"...experts.down_proj[3]"`` the whole 3-D experts parameter
    under its path (one parameter, one optimizer group, per-expert masks)."""
    name = layer if isinstance(layer, str) else layer.name
    expert = _EXPERT_NAME.match(name)
    try:
        if expert:
            return expert.group(1), model.get_parameter(expert.group(1))
        return name, model.get_submodule(name).weight
    except AttributeError as exc:
        raise LiftError(f"the model has no layer named {name!r}") from exc


def layer_weight(model: nn.Module, layer: LinearLayer | str) -> torch.Tensor:
    """The layer's weight viewed as (out, in) (a view: no copy)."""
    name = layer if isinstance(layer, str) else layer.name
    path, weight = layer_parameter(model, name)
    expert = _EXPERT_NAME.match(name)
    if expert:
        return weight.detach()[int(expert.group(2))]
    return weight.detach().t() if _is_conv1d(model.get_submodule(name)) else weight.detach()


def layers_table(model: nn.Module):
    """A pandas DataFrame with one row per linear layer: name, block, role, (expert, for a
    mixture-of-experts model), shape, params."""
    import pandas as pd

    layers = list_linear_layers(model)
    with_experts = any(l.expert is not None for l in layers)
    rows = [
        {"layer": l.name, "block": l.block, "role": l.role,
         **({"expert": l.expert} if with_experts else {}),
         "out": l.shape[0], "in": l.shape[1], "params": l.numel}
        for l in layers
    ]
    table = pd.DataFrame(rows)
    if with_experts:  # an expert column only for mixture-of-experts models
        table["expert"] = table["expert"].astype("Int64")
    # Nullable integers: block 0, 1, ... and <NA> outside the blocks, never 0.0 / NaN.
    table["block"] = table["block"].astype("Int64")
    return table
