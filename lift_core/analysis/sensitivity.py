"""The paper's noise-sensitivity test: how much does noise on k chosen entries hurt a model?

For every block linear (or one chosen layer) each selector picks k = min((m+n)*R, m*n)
entries (R: the LoRA-equivalent budget rank): LIFT's principal weights (largest |W_r|),
the largest |W|, random entries, or the smallest |W_r|. Gaussian noise of ``scale`` x std(W)
is added to those entries only, the model is measured (lift_core.analysis.sensitivity_measures)
together with each touched matrix's relative change of spectral norm, and the entries are
written back bit for bit. The paper's claim is that principal weights are the most
sensitive; the whole curve over scales is returned, because the order can change with scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
from torch import nn

from lift_core.analysis.sensitivity_measures import METRICS, make_measure
from lift_core.checks import check_budget_rank, check_filter_rank_fits, check_svd_mode
from lift_core.errors import LiftError
from lift_core.lowrank.masks import lora_budget, magnitude_mask, random_mask
from lift_core.lowrank.scoring import PrincipalScorer
from lift_core.lowrank.spectra import singular_values
from lift_core.models.loading import LinearLayer, layer_weight, list_linear_layers

Progress = Callable[[int, int, str], None]  # (steps done, steps total, what is running)

SELECTORS = ("lift", "magnitude", "random", "lift_smallest")  # mask strategy names
DEFAULT_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
MAX_SCALE = 100.0  # noise 100x a matrix's std already replaces the selected entries
MAX_DRAWS = 20
MAX_PERTURBATIONS = 200  # selectors x scales x draws: each one is a full evaluation


def parse_selector(name: str) -> str:
    """A selector name as the table writes it (``lift-smallest`` -> ``lift_smallest``)."""
    key = name.strip().lower().replace("-", "_")
    if key not in SELECTORS:
        allowed = ", ".join(s.replace("_", "-") for s in SELECTORS)
        raise LiftError(f"unknown selector {name.strip()!r} (allowed: {allowed})")
    return key


@dataclass(frozen=True)
class SensitivityConfig:
    """What to perturb, how strongly and how often."""

    selectors: tuple[str, ...] = SELECTORS
    """Which entries get the noise: names of :data:`SELECTORS` (``lift-smallest`` accepted)."""
    scales: tuple[float, ...] = DEFAULT_SCALES
    """Noise standard deviations, in units of each matrix's own std(W); 0 = no noise."""
    draws: int = 3
    """Noise draws per (selector, scale): the mean ± std is over these."""
    budget_rank: int = 4
    """k per matrix = min((m+n) * budget_rank, m*n), LoRA's count at this rank."""
    filter_rank: int = 4
    """r of W_r, LIFT's score |W_r|."""
    layer: str | None = None
    """One layer name to perturb; None: every linear inside the transformer blocks."""
    eval_limit: int | None = None
    """Causal LMs: at most this many examples of each eval set (evenly spaced); None: all."""
    seed: int = 0
    """Seeds the noise and the random selector (draw d uses seed + d)."""
    svd: str = "exact"
    """SVD of the LIFT scores: "exact" or "randomized"."""

    def __post_init__(self):
        selectors = tuple(dict.fromkeys(parse_selector(s) for s in self.selectors))
        if not selectors:
            raise LiftError("no selectors given (allowed: " + ", ".join(SELECTORS) + ")")
        object.__setattr__(self, "selectors", selectors)
        scales = tuple(float(s) for s in self.scales)
        if not scales:
            raise LiftError("no noise scales given: list one or more numbers >= 0")
        bad = [s for s in scales if not (math.isfinite(s) and 0 <= s <= MAX_SCALE)]
        if bad:
            raise LiftError(f"noise scale {bad[0]:g} is out of range (allowed: 0 to {MAX_SCALE:g} x std(W))")
        object.__setattr__(self, "scales", tuple(sorted(set(scales))))
        if not isinstance(self.draws, int) or not 1 <= self.draws <= MAX_DRAWS:
            raise LiftError(f"draws must be a whole number from 1 to {MAX_DRAWS}, got {self.draws!r}")
        check_budget_rank(self.budget_rank)
        if not isinstance(self.filter_rank, int) or self.filter_rank < 1:
            raise LiftError(f"filter rank must be a whole number >= 1, got {self.filter_rank!r}")
        if self.eval_limit is not None and (not isinstance(self.eval_limit, int) or self.eval_limit < 1):
            raise LiftError(f"eval limit must be a whole number >= 1, got {self.eval_limit!r}")
        check_svd_mode(self.svd)
        if self.perturbations > MAX_PERTURBATIONS:
            raise LiftError(
                f"{len(self.selectors)} selectors x {len(self.scales)} scales x {self.draws} draws "
                f"= {self.perturbations} evaluations; at most {MAX_PERTURBATIONS} are allowed")

    @property
    def perturbations(self) -> int:
        """How many times the model is perturbed and measured."""
        return len(self.selectors) * len(self.scales) * self.draws


@dataclass
class SensitivityResult:
    """One row per (selector, scale, draw), the clean model's numbers, and notes."""

    table: pd.DataFrame
    baseline: dict[str, float]
    metrics: tuple[str, ...]  # metric columns of the table, spectral_norm_change last
    layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        """Mean and std over draws per (selector, scale): see :func:`summarize`."""
        return summarize(self.table, self.metrics)


@dataclass
class _Target:
    """One perturbed matrix: its (out, in) view, std, clean spectral norm and selections."""

    layer: LinearLayer
    view: torch.Tensor
    std: float
    basis: torch.Tensor  # (in, b) top right singular vectors of the clean matrix
    norm: float
    picks: dict[str, torch.Tensor]  # selector -> flat indices (random: one per draw)


def _layers(model: nn.Module, config: SensitivityConfig) -> list[LinearLayer]:
    """The block linears, or the one named layer (any linear, inside the blocks or not)."""
    layers = list_linear_layers(model, blocks_only=config.layer is None)
    if config.layer is not None:
        layers = [l for l in layers if l.name == config.layer]
        if not layers:
            raise LiftError(f"the model has no linear layer named {config.layer!r} "
                            "(`python -m lift_core layers` lists them)")
    check_filter_rank_fits({l.name: l.shape for l in layers}, config.filter_rank)
    return layers


def selected_entries(scorer: PrincipalScorer, k: int, config: SensitivityConfig) -> dict[str, torch.Tensor]:
    """Flat indices (row * n + col) of the k entries each selector of ``config`` picks in the
    scorer's matrix; the random selector gives one set per draw, keyed ``random#<draw>``
    (seeded by seed + draw), so the spread over draws includes the choice of entries."""
    masks = {}
    for name in config.selectors:
        if name == "lift":
            masks[name] = scorer.mask(config.filter_rank, k)
        elif name == "lift_smallest":  # the same scorer: in exact mode one SVD for both
            masks[name] = scorer.mask(config.filter_rank, k, largest=False)
        elif name == "magnitude":
            masks[name] = magnitude_mask(scorer.matrix, k=k)
        else:
            for d in range(config.draws):
                gen = torch.Generator().manual_seed(config.seed + d)
                masks[f"random#{d}"] = random_mask(scorer.matrix, k=k, generator=gen)
    # Indices, not masks: k numbers per selection instead of m*n booleans.
    index_type = torch.int32 if scorer.matrix.numel() < 2**31 else torch.int64
    return {name: m.reshape(-1).nonzero().squeeze(1).to(index_type) for name, m in masks.items()}


def _select(layer: LinearLayer, view: torch.Tensor, config: SensitivityConfig) -> _Target:
    scorer = PrincipalScorer(view, svd=config.svd, generator=torch.Generator().manual_seed(config.seed))
    picks = selected_entries(scorer, lora_budget(layer.shape, config.budget_rank), config)
    basis = scorer.factors()[2][:_BASIS].T.contiguous()
    # The clean norm by the same iteration as the perturbed ones: noise 0 changes nothing.
    return _Target(layer, view, float(scorer.matrix.std()), basis, _spectral_norm(view, basis), picks)


_BASIS = 8  # block size of the spectral-norm iteration
_NORM_TOLERANCE = 1e-6  # relative; measured error vs svdvals on MiniLM at 0.25-4σ: < 1e-6
_NORM_MAX_ITERATIONS = 100


def _spectral_norm(view: torch.Tensor, basis: torch.Tensor) -> float:
    """Largest singular value by block power iteration from the clean matrix's top right
    singular vectors (7x faster than svdvals on MiniLM's layers, where it dominated the
    run); svdvals when the iteration has not settled within the budget."""
    w = view.detach().float()
    q, estimate = basis, 0.0
    for _ in range(_NORM_MAX_ITERATIONS):
        z = w @ q  # (m, b)
        previous, estimate = estimate, float(torch.linalg.svdvals(z)[0])  # a lower bound of σ1
        if abs(estimate - previous) <= _NORM_TOLERANCE * estimate:
            return estimate
        q = torch.linalg.qr(w.T @ z).Q
    return float(singular_values(w)[0])


def _noise(target_number: int, k: int, draw: int, seed: int) -> torch.Tensor:
    # The same standard-normal vector for every selector and scale of one draw: the curves
    # differ by where the noise goes and how strong it is, not by luck of the draw.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + draw * 10_007 + target_number)
    return torch.randn(k, generator=gen, dtype=torch.float32)


@torch.no_grad()
def _perturb(targets: list[_Target], selector: str, scale: float, draw: int, seed: int) -> list:
    """Add the noise in place; return what restores it: (view, rows, cols, saved values)."""
    saved = []
    key = f"random#{draw}" if selector == "random" else selector
    for number, t in enumerate(targets):
        index = t.picks[key].long()
        rows, cols = index // t.view.shape[1], index % t.view.shape[1]
        old = t.view[rows, cols].clone()
        noise = _noise(number, index.numel(), draw, seed).to(t.view.device) * (scale * t.std)
        t.view[rows, cols] = (old.float() + noise).to(t.view.dtype)
        saved.append((t.view, rows, cols, old))
    return saved


@torch.no_grad()
def _restore(saved: list) -> None:
    for view, rows, cols, old in saved:
        view[rows, cols] = old


def noise_sensitivity(model: nn.Module, tokenizer, config: SensitivityConfig | None = None, *,
                      progress: Progress | None = None) -> SensitivityResult:
    """Run the noise-sensitivity test on ``model`` (changed during the run, restored exactly).

    Args:
        model: a loaded causal LM (measured by loss and accuracy on the built-in eval sets)
            or encoder (by the cosine of fixed sentences' embeddings to the clean model's).
        tokenizer: its tokenizer.
        config: selectors, scales, draws, budget, layer (defaults: SensitivityConfig()).
        progress: called with (done, total, label) after each scored layer and evaluation.

    Returns:
        SensitivityResult: a table with one row per (selector, scale, draw).
    """
    config = config or SensitivityConfig()
    report = progress or (lambda done, total, label: None)
    layers = _layers(model, config)
    total = len(layers) + 1 + config.perturbations
    targets = []
    for done, layer in enumerate(layers, start=1):
        targets.append(_select(layer, layer_weight(model, layer), config))
        report(done, total, f"choosing entries · {layer.name}")
    measure = make_measure(model, tokenizer, eval_limit=config.eval_limit)
    baseline = measure(model)
    report(len(targets) + 1, total, "clean model measured")
    rows, done = [], len(targets) + 1
    for selector in config.selectors:
        for scale in config.scales:
            for draw in range(config.draws):
                saved = _perturb(targets, selector, scale, draw, config.seed)
                try:
                    change = [abs(_spectral_norm(t.view, t.basis) - t.norm) / max(t.norm, 1e-30) for t in targets]
                    rows.append({"selector": selector, "scale": scale, "draw": draw, **measure(model),
                                 "spectral_norm_change": sum(change) / len(change)})
                finally:
                    _restore(saved)
                done += 1
                report(done, total, f"{selector} · {scale:g}σ · draw {draw + 1}/{config.draws}")
    metrics = (*measure.metrics, "spectral_norm_change")
    k_total = sum(t.picks[next(iter(t.picks))].numel() for t in targets)
    numel = sum(t.layer.numel for t in targets)
    matrices = "1 matrix" if len(targets) == 1 else f"{len(targets)} matrices"
    notes = [f"{matrices}, {k_total:,} of their {numel:,} entries "
             f"({100 * k_total / numel:.2f}%) perturbed per evaluation"]
    return SensitivityResult(pd.DataFrame(rows), {**baseline, "spectral_norm_change": 0.0},
                             metrics, [t.layer.name for t in targets], notes)


def summarize(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Per (selector, scale): ``<metric>_mean`` and ``<metric>_std`` over draws (std 0 for
    a single draw), in the table's selector order and ascending scale."""
    grouped = table.groupby(["selector", "scale"], sort=False)[list(metrics)]
    out = grouped.agg(["mean", "std"]).fillna(0.0)
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out = out.reset_index()
    order = {name: i for i, name in enumerate(dict.fromkeys(table["selector"]))}
    return out.sort_values(["selector", "scale"], key=lambda c: c.map(order) if c.name == "selector" else c,
                           ignore_index=True)


def format_summary(summary: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The summary as text cells ``mean ± std`` (5 significant digits), one column per metric."""
    out = summary[["selector", "scale"]].copy()
    for metric in metrics:
        out[metric] = [f"{m:.5g} ± {s:.2g}" for m, s in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"])]
    return out


def most_damaging(summary: pd.DataFrame, metric: str) -> pd.Series:
    """Per scale, the selector whose mean ``metric`` shows the most damage (highest loss,
    lowest accuracy or cosine)."""
    if metric not in METRICS:
        raise LiftError(f"unknown metric {metric!r} (allowed: {', '.join(METRICS)})")
    column = f"{metric}_mean"
    pick = "idxmax" if METRICS[metric].higher_is_worse else "idxmin"
    rows = summary.groupby("scale")[column].agg(pick)
    return summary.loc[rows.values].set_index("scale")["selector"]
