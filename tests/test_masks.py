"""lift_core.lowrank.masks: LIFT masks against a float64 SVD reference, baselines, budgets, registry."""

import pytest
import torch

import lift_core.lowrank.svd as svd_module
from bench.common import power_law_matrix
from lift_core.analysis.overlap import jaccard
from lift_core.errors import LiftError
from lift_core.lowrank.masks import (
    MASK_STRATEGIES,
    budget_is_clipped,
    compute_mask,
    density_budget,
    lift_mask,
    lift_smallest_mask,
    lora_budget,
    magnitude_mask,
    random_mask,
    top_k_mask,
)

SHAPES = [(48, 48), (96, 40), (40, 96)]  # square, tall, wide


def _reference_mask(w, k, r, largest=True):
    """Top-k of |W_r| with W_r from a float64 SVD."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    scores = ((u[:, :r] * s[:r]) @ vh[:r]).abs()
    idx = torch.topk(scores.reshape(-1), k, largest=largest).indices
    mask = torch.zeros(w.numel(), dtype=torch.bool)
    mask[idx] = True
    return mask.view(w.shape)


def _structured(m, n):
    """Low rank plus a few large outlier columns, like a trained layer."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(m, 3, generator=g) @ torch.randn(3, n, generator=g)
    w += 0.05 * torch.randn(m, n, generator=g)
    w[:, :2] *= 8
    return w


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_lift_mask_matches_float64_reference(shape, kind):
    w = torch.randn(*shape) if kind == "random" else _structured(*shape)
    for r in (1, 4, min(shape)):
        k = lora_budget(shape, 2)
        mask = lift_mask(w, k=k, filter_rank=r)
        assert mask.shape == w.shape and mask.dtype == torch.bool
        assert int(mask.sum()) == k
        # fp32 vs fp64 may swap near-ties at the threshold, nothing more
        assert jaccard(mask, _reference_mask(w, k, r)) > 0.97


def test_full_rank_lift_is_magnitude():
    w = torch.randn(30, 20)
    k = 100
    assert torch.equal(lift_mask(w, k=k, filter_rank=20), magnitude_mask(w, k=k))


def test_bf16_input():
    w = _structured(64, 48).to(torch.bfloat16)
    for svd in ("exact", "randomized"):
        mask = lift_mask(w, k=300, filter_rank=3, svd=svd)
        assert mask.shape == (64, 48) and int(mask.sum()) == 300
        assert jaccard(mask, _reference_mask(w.float(), 300, 3)) > 0.97


def test_lift_smallest_is_the_complement_ordering():
    w = torch.randn(40, 30)
    n = w.numel()
    largest = lift_mask(w, k=n - 200, filter_rank=4)
    smallest = lift_smallest_mask(w, k=200, filter_rank=4)
    assert int(smallest.sum()) == 200
    assert not (largest & smallest).any()
    assert torch.equal(largest | smallest, torch.ones_like(largest))
    assert torch.equal(smallest, _reference_mask(w, 200, 4, largest=False))


def test_magnitude_and_random_masks():
    w = torch.tensor([[0.1, -5.0, 0.3], [2.0, 0.0, -0.2]])
    assert magnitude_mask(w, k=2).tolist() == [[False, True, False], [True, False, False]]
    a = random_mask(w, k=3, generator=torch.Generator().manual_seed(0))
    b = random_mask(w, k=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and int(a.sum()) == 3
    big = torch.zeros(200, 200)
    masks = [random_mask(big, k=2000, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert 0.02 < jaccard(*masks) < 0.1  # independent 5% masks overlap ~2.6%
    rows = masks[0].sum(1).float()
    assert rows.mean() == 10 and rows.max() < 30


def test_top_k_mask_exact_on_large_inputs():
    # Large inputs take the prefiltered path; it must still pick exactly the top k.
    scores = torch.randn(1200, 1000)
    scores[:, 0] += 10  # a column structure the strided sample must not be fooled by
    for k in (1, 5000, 150_000, 600_000):
        mask = top_k_mask(scores, k)
        assert int(mask.sum()) == k
        kth = torch.topk(scores.reshape(-1), k).values[-1]
        assert scores[mask].min() >= kth and (scores[~mask] <= kth).all()
    with pytest.raises(LiftError, match="k \\(entries to select\\)"):
        top_k_mask(scores, 0)


def test_lora_budget_and_clipping():
    assert lora_budget((4096, 4096), 128) == 8192 * 128
    assert lora_budget((11008, 4096), 128) == (11008 + 4096) * 128
    assert not budget_is_clipped((384, 384), 64)
    assert lora_budget((10, 10), 8) == 100 and budget_is_clipped((10, 10), 8)
    assert lora_budget((10, 10), 5) == 100 and not budget_is_clipped((10, 10), 5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(LiftError, match="budget"):
            lora_budget((10, 10), bad)
    with pytest.raises(LiftError, match="2-D"):
        lora_budget((10,), 1)


def test_density_budget():
    assert density_budget((100, 100), 0.05) == 500
    assert density_budget((10, 10), 0.001) == 1
    assert density_budget((10, 10), 1.0) == 100
    for bad in (0, 1.5, -0.1):
        with pytest.raises(LiftError, match="density"):
            density_budget((10, 10), bad)


def test_registry_and_compute_mask():
    assert set(MASK_STRATEGIES) >= {"lift", "magnitude", "random", "lift_smallest"}
    w = torch.randn(20, 16)
    assert torch.equal(compute_mask("lift", w, k=30, filter_rank=3), lift_mask(w, k=30, filter_rank=3))
    assert torch.equal(compute_mask("magnitude", w, k=30), magnitude_mask(w, k=30))
    with pytest.raises(LiftError, match="unknown mask 'best' \\(allowed: lift, magnitude"):
        compute_mask("best", w, k=30)
    with pytest.raises(LiftError, match="needs a filter rank"):
        compute_mask("lift", w, k=30)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weight=torch.ones(2, 3, 4), k=1, filter_rank=1), "expected a 2-D weight matrix"),
        (dict(k=10, filter_rank=0), "filter rank 0 is out of range for a 8x6 matrix \\(allowed: 1 to 6\\)"),
        (dict(k=10, filter_rank=7), "filter rank 7 is out of range"),
        (dict(k=0, filter_rank=2), "k \\(entries to select\\) must be between 1 and 48"),
        (dict(k=49, filter_rank=2), "must be between 1 and 48 for a 8x6 matrix, got 49"),
        (dict(k=10, filter_rank=2, svd="fast"), "unknown svd mode 'fast' \\(allowed: exact, randomized\\)"),
    ],
)
def test_errors(kwargs, message):
    kwargs = {"weight": torch.randn(8, 6), **kwargs}
    with pytest.raises(LiftError, match=message):
        lift_mask(kwargs.pop("weight"), **kwargs)


# --- randomized accuracy ---------------------------------------------------------------


def _jaccard_vs_exact(w, k, r, seed=0):
    exact = lift_mask(w, k=k, filter_rank=r)
    fast = lift_mask(w, k=k, filter_rank=r, svd="randomized",
                     generator=torch.Generator().manual_seed(seed))
    assert int(fast.sum()) == k and fast.shape == w.shape
    return jaccard(exact, fast)


def test_randomized_power_law_1024():
    w = power_law_matrix(1024, 1024)
    k = lora_budget(w.shape, 64)
    assert _jaccard_vs_exact(w, k, 64) >= 0.99


def test_randomized_tall_and_wide():
    for shape in ((700, 520), (520, 700)):
        w = power_law_matrix(*shape, exponent=0.7)
        assert _jaccard_vs_exact(w, lora_budget(shape, 8), 8) >= 0.99


@pytest.fixture(scope="module")
def minilm_weights():
    from lift_core.models.loading import layer_weight, list_linear_layers, load_model

    model = load_model("minilm")
    return {layer.name: layer_weight(model, layer).detach().clone()
            for layer in list_linear_layers(model)}


@pytest.fixture
def force_krylov(monkeypatch):
    """Use the Krylov path even on MiniLM's small layers (normally they fall back to exact)."""
    monkeypatch.setattr(svd_module, "RANDOMIZED_MIN_DIM", 0)


def test_randomized_minilm_subset(minilm_weights, force_krylov):
    names = [n for n in minilm_weights if ".0." in n or ".5." in n]
    names = [n for n in names if any(t in n for t in ("query", "value", "intermediate", "output.dense"))]
    for name in names[:4]:
        w = minilm_weights[name]
        for r, budget in ((4, 4), (8, 32)):
            j = _jaccard_vs_exact(w, lora_budget(tuple(w.shape), budget), r)
            assert j >= 0.99, (name, r, budget, j)


def test_randomized_minilm_public_path(minilm_weights):
    w = next(iter(minilm_weights.values()))
    assert _jaccard_vs_exact(w, lora_budget(tuple(w.shape), 8), 8) == 1.0  # exact fallback


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["same", 4, 128])
def test_randomized_minilm_all_layers(minilm_weights, force_krylov, budget):
    for name, w in minilm_weights.items():
        for r in (4, 8, 16, 32, 64):
            k = lora_budget(tuple(w.shape), r if budget == "same" else budget)
            j = _jaccard_vs_exact(w, k, r)
            assert j >= 0.99, (name, r, budget, j)


@pytest.mark.gpu
def test_randomized_on_cuda():
    w = power_law_matrix(1024, 1024).cuda().to(torch.bfloat16)
    k = lora_budget(w.shape, 32)
    for gen in (None, torch.Generator(device="cuda").manual_seed(0), torch.Generator().manual_seed(0)):
        fast = lift_mask(w, k=k, filter_rank=32, svd="randomized", generator=gen)
        assert fast.is_cuda and int(fast.sum()) == k
        assert jaccard(fast, lift_mask(w, k=k, filter_rank=32)) >= 0.99
    rnd = random_mask(w, k=k, generator=torch.Generator(device="cuda").manual_seed(0))
    assert rnd.is_cuda and int(rnd.sum()) == k
