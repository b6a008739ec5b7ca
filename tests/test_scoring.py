"""lift_core.lowrank.scoring: one |W_r| scorer for masks, sweeps, analysis and the optimizer's refresh."""

import pytest
import torch

from lift_core.analysis.layers import analyze_layer
from lift_core.analysis.overlap import (
    baseline_masks,
    jaccard,
    overlap_vs_budget,
    overlap_vs_filter_rank,
)
from lift_core.errors import LiftError
from lift_core.lowrank.masks import (
    lift_mask,
    lift_smallest_mask,
    lora_budget,
    magnitude_mask,
    top_k_mask,
)
from lift_core.lowrank.scoring import PrincipalScorer
from lift_core.lowrank.svd import low_rank_approximation
from lift_core.models.loading import layer_weight, list_linear_layers, load_model
from lift_core.optim import SparseAdamW


@pytest.fixture(scope="module")
def builtin_weight():
    """A real trained matrix: the built-in model's first gate projection, (352, 128)."""
    model = load_model("builtin")
    layer = next(l for l in list_linear_layers(model) if l.role == "gate")
    return layer_weight(model, layer).detach().clone()


@pytest.fixture
def svd_calls(monkeypatch):
    """Counts full SVDs and svdvals calls made anywhere through torch.linalg."""
    calls = {"svd": 0, "svdvals": 0}
    for name in calls:
        original = getattr(torch.linalg, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch.linalg, name, counted)
    return calls


def test_one_svd_serves_every_rank_and_the_spectrum(builtin_weight, svd_calls):
    w = builtin_weight
    k = lora_budget(tuple(w.shape), 4)
    scorer = PrincipalScorer(w)
    masks = {r: scorer.mask(r, k) for r in (1, 4, 16, 128)}
    smallest = scorer.mask(4, k, largest=False)
    s = scorer.singular_values()
    assert svd_calls == {"svd": 1, "svdvals": 0}
    for r, mask in masks.items():
        assert torch.equal(mask, lift_mask(w, k=k, filter_rank=r))
    assert torch.equal(smallest, lift_smallest_mask(w, k=k, filter_rank=4))
    assert torch.equal(masks[128], magnitude_mask(w, k=k))  # full rank: W_r = W
    assert torch.allclose(s, torch.linalg.svdvals(w), rtol=1e-4)


def test_sweeps_and_analysis_use_one_svd(builtin_weight, svd_calls):
    w = builtin_weight
    overlap_vs_filter_rank(w, k=lora_budget(tuple(w.shape), 4), filter_ranks=[1, 2, 8, 32, 128])
    assert svd_calls["svd"] == 1
    overlap_vs_budget(w, filter_rank=8, lora_ranks=[1, 4, 16, 64])
    assert svd_calls["svd"] == 2
    analyze_layer(w, lora_rank=4, filter_rank=8)
    assert svd_calls == {"svd": 3, "svdvals": 0}  # the spectrum came from the mask's SVD


def test_randomized_fallback_reuses_the_exact_svd(builtin_weight, svd_calls):
    # MiniLM- and builtin-sized layers are below RANDOMIZED_MIN_DIM: exact, computed once.
    scorer = PrincipalScorer(builtin_weight, svd="randomized", generator=torch.Generator().manual_seed(0))
    k = lora_budget(scorer.shape, 2)
    first, second = scorer.mask(2, k), scorer.mask(8, k)
    scorer.singular_values()
    assert svd_calls == {"svd": 1, "svdvals": 0}
    assert torch.equal(first, lift_mask(builtin_weight, k=k, filter_rank=2))
    assert torch.equal(second, lift_mask(builtin_weight, k=k, filter_rank=8))


def test_scores_are_a_fresh_tensor():
    w = torch.randn(20, 12)
    scorer = PrincipalScorer(w)
    scores = scorer.scores(3)
    assert scores.dtype == torch.float32 and (scores >= 0).all()
    scores.zero_()  # must not reach the scorer's cache
    assert torch.equal(scorer.mask(3, 30), lift_mask(w, k=30, filter_rank=3))


def test_explorer_and_trainer_agree_on_the_mask(builtin_weight):
    """The drift test: the trainer's mask, before and after a refresh, is exactly what the
    explorer shows (|W_r| view, baseline masks, overlap sweep) and the analysis reports."""
    lora_rank, r = 4, 8
    p = torch.nn.Parameter(builtin_weight.clone())
    k = lora_budget(tuple(p.shape), lora_rank)
    opt = SparseAdamW([{"params": [p], "mask": "lift", "lora_rank": lora_rank, "filter_rank": r,
                        "update_interval": 1}], lr=0.05)
    seen = []
    for _ in range(2):  # the initial mask, then the one refreshed from the moved weights
        trained = opt.mask_of(p)
        seen.append(trained)
        w = p.detach().clone()
        explorer_scores = low_rank_approximation(w, r).abs()  # the app's |W_r| heatmap
        assert torch.equal(top_k_mask(explorer_scores, k), trained)
        assert torch.equal(PrincipalScorer(w).scores(r), explorer_scores)
        assert torch.equal(baseline_masks(w, k=k, filter_rank=r)["lift"], trained)
        _, analysis_mask = analyze_layer(w, lora_rank=lora_rank, filter_rank=r)
        assert torch.equal(analysis_mask, trained)
        sweep = overlap_vs_filter_rank(w, k=k, filter_ranks=[r]).iloc[0]
        assert sweep["jaccard_lift_vs_magnitude"] == pytest.approx(jaccard(trained, magnitude_mask(w, k=k)))
        p.grad = torch.randn_like(p)
        opt.step()
    assert not torch.equal(seen[0], seen[1]), "the refresh should move the mask"


def test_bad_input_uses_the_shared_checks():
    with pytest.raises(LiftError, match="expected a 2-D weight matrix"):
        PrincipalScorer(torch.ones(2, 3, 4))
    with pytest.raises(LiftError, match="unknown svd mode 'fast' \\(allowed: exact, randomized\\)"):
        PrincipalScorer(torch.ones(4, 4), svd="fast")
    scorer = PrincipalScorer(torch.randn(8, 6))
    with pytest.raises(LiftError, match="filter rank 7 is out of range for a 8x6 matrix"):
        scorer.scores(7)
    with pytest.raises(LiftError, match="k \\(entries to select\\) must be between 1 and 48"):
        scorer.mask(2, 49)
