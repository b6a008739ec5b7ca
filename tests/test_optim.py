"""SparseAdamW against an independent dense reference, plus refresh, state and clipping.

The reference is deliberately naive: dense Adam moments multiplied by the mask after every
update (so entries outside the mask always hold zero moments and enter at zero), and a
dense update multiplied by the mask. SparseAdamW must match it step for step.
"""

import io
import math

import pytest
import torch

from lift_core.errors import LiftError
from lift_core.lowrank.masks import compute_mask, lora_budget
import lift_core.optim.update as optim_update
from lift_core.optim import SparseAdamW

BETAS = (0.9, 0.95)
EPS = 1e-6


class ReferenceMaskedAdamW:
    """Dense transformers-style AdamW with the update and the moments multiplied by a mask."""

    def __init__(self, params, mask_fn, *, weight_decay, update_interval):
        self.params = params
        self.mask_fn = mask_fn  # (param index, param) -> bool mask
        self.weight_decay = weight_decay
        self.update_interval = update_interval
        self.t = 0
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.masks = [mask_fn(i, p) for i, p in enumerate(params)]

    @torch.no_grad()
    def step(self, lr):
        self.t += 1
        b1, b2 = BETAS
        step_size = lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, m, v, mask in zip(self.params, self.exp_avg, self.exp_avg_sq, self.masks):
            keep = mask.to(p.dtype)
            m.mul_(b1).add_((1 - b1) * p.grad).mul_(keep)
            v.mul_(b2).add_((1 - b2) * p.grad * p.grad).mul_(keep)
            p.sub_(step_size * m / (v.sqrt() + EPS) * keep)
            p.sub_(lr * self.weight_decay * p * keep)
        if self.update_interval and self.t % self.update_interval == 0:
            self.masks = [self.mask_fn(i, p) for i, p in enumerate(self.params)]
            for m, v, mask in zip(self.exp_avg, self.exp_avg_sq, self.masks):
                m.mul_(mask)
                v.mul_(mask)


def _tiny_weights():
    return [torch.randn(16, 12) * 0.5, torch.randn(10, 16) * 0.5]


def _loss(weights, x, y):
    hidden = torch.tanh(x @ weights[0].T)
    return ((hidden @ weights[1].T - y) ** 2).mean()


def _backward_two_micro_batches(weights, batches):
    for x, y in batches:
        _loss(weights, x, y).backward()


def _schedule(step):
    return min(1.0, (step + 1) / 4) * (1 - step / 50)  # warmup then linear decay


@pytest.mark.parametrize("free_dense_grads", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("mask", ["lift", "magnitude", "random"])
def test_matches_dense_reference_through_refreshes(mask, weight_decay, free_dense_grads):
    lr, interval, steps = 0.03, 7, 32
    start = _tiny_weights()
    params = [torch.nn.Parameter(w.clone()) for w in start]
    ref_params = [w.clone().requires_grad_() for w in start]
    group = {"params": params, "mask": mask, "lora_rank": 2, "filter_rank": 3,
             "update_interval": interval}
    opt = SparseAdamW([group], lr=lr, betas=BETAS, eps=EPS, weight_decay=weight_decay,
                      free_dense_grads=free_dense_grads)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, _schedule)

    def reference_mask(i, p):
        if mask == "random":  # weight-independent: only the update rule is under test
            return opt.mask_of(params[i])
        k = lora_budget(tuple(p.shape), 2)
        return compute_mask(mask, p.detach(), k=k, filter_rank=3)

    ref = ReferenceMaskedAdamW(ref_params, reference_mask, weight_decay=weight_decay,
                               update_interval=interval)
    for step in range(steps):
        batches = [(torch.randn(8, 12), torch.randn(8, 10)) for _ in range(2)]
        lr_now = opt.param_groups[0]["lr"]
        _backward_two_micro_batches(params, batches)
        _backward_two_micro_batches(ref_params, batches)
        if free_dense_grads:
            assert all(p.grad is None for p in params)
        opt.step()
        scheduler.step()
        ref.step(lr_now)
        opt.zero_grad()
        for p in ref_params:
            p.grad = None
        for p, q, ref_mask in zip(params, ref_params, ref.masks):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
            assert torch.equal(opt.mask_of(p), ref_mask), f"mask differs after step {step + 1}"
    events = opt.pop_refresh_events()
    assert [e["step"] for e in events] == [7, 14, 21, 28]
    assert sum(e["changed_fraction"] for e in events) > 0
    assert opt.pop_refresh_events() == []


def test_refresh_recomputes_from_current_weights_and_carries_moments():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(20, 30))
    lr, interval, rank, filter_rank = 0.2, 5, 2, 4
    k = lora_budget((20, 30), rank)
    opt = SparseAdamW([{"params": [p], "mask": "lift", "lora_rank": rank,
                        "filter_rank": filter_rank, "update_interval": interval}], lr=lr)
    first = compute_mask("lift", p.detach(), k=k, filter_rank=filter_rank)
    assert torch.equal(opt.mask_of(p), first)
    grads = [torch.randn(20, 30) for _ in range(interval + 1)]
    for g in grads[: interval - 1]:
        p.grad = g
        opt.step()
        assert torch.equal(opt.mask_of(p), first)  # no refresh before step `interval`
    state = opt.state[p]
    old_idx = state["indices"].long()
    b1, b2 = BETAS
    g_old = grads[interval - 1].reshape(-1)[old_idx]
    m_expected = b1 * state["exp_avg"] + (1 - b1) * g_old
    v_expected = b2 * state["exp_avg_sq"] + (1 - b2) * g_old**2
    p.grad = grads[interval - 1]
    opt.step()

    new_mask = compute_mask("lift", p.detach(), k=k, filter_rank=filter_rank)
    assert torch.equal(opt.mask_of(p), new_mask)
    assert not torch.equal(new_mask, first), "the test should move the mask"
    new_idx = state["indices"].long()
    stays = torch.isin(new_idx, old_idx)
    old_pos = torch.searchsorted(old_idx, new_idx[stays])
    torch.testing.assert_close(state["exp_avg"][stays], m_expected[old_pos])
    torch.testing.assert_close(state["exp_avg_sq"][stays], v_expected[old_pos])
    assert torch.all(state["exp_avg"][~stays] == 0)
    assert torch.all(state["exp_avg_sq"][~stays] == 0)
    assert state["step"] == interval

    # An entering entry's first update uses bias correction at t = interval + 1, not t = 1.
    entered = new_idx[~stays][0]
    before = p.detach().reshape(-1)[entered].item()
    g = grads[interval].reshape(-1)[entered].item()
    p.grad = grads[interval]
    opt.step()
    t = interval + 1
    step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
    expected = before - step_size * (1 - b1) * g / (math.sqrt((1 - b2) * g * g) + EPS)
    assert p.detach().reshape(-1)[entered].item() == pytest.approx(expected, rel=1e-5)
    assert state["step"] == t


def test_untouched_entries_never_move_and_budget_is_exact():
    shapes = [(24, 40), (40, 24), (6, 5)]  # the last one's budget is clipped to the matrix
    params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    start = [p.detach().clone() for p in params]
    opt = SparseAdamW([{"params": params, "mask": "magnitude", "lora_rank": 3,
                        "update_interval": 100}], lr=0.1, weight_decay=0.1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    masked_entries = 0
    for p, w0, shape in zip(params, start, shapes):
        mask = opt.mask_of(p)
        k = lora_budget(shape, 3)
        masked_entries += k
        assert mask.shape == p.shape and int(mask.sum()) == k
        assert torch.equal(p.detach()[~mask], w0[~mask])
        assert (p.detach()[mask] != w0[mask]).all()
        assert opt.state[p]["indices"].dtype == torch.int32
    assert opt.state_bytes() <= 12 * masked_entries


def test_dense_group_equals_torch_adamw_and_reference():
    start = [torch.randn(7, 9), torch.randn(9)]
    ours = [torch.nn.Parameter(w.clone()) for w in start]
    theirs = [torch.nn.Parameter(w.clone()) for w in start]
    # With eps = 0 and no decay the transformers and torch AdamW formulas coincide.
    opt = SparseAdamW([{"params": ours}], lr=0.01, eps=0.0)
    torch_opt = torch.optim.AdamW(theirs, lr=0.01, betas=BETAS, eps=0.0, weight_decay=0.0)
    for _ in range(10):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        opt.step()
        torch_opt.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(opt.mask_of(p).all() for p in ours)

    p = torch.nn.Parameter(torch.randn(5, 6))
    q = p.detach().clone().requires_grad_()
    opt = SparseAdamW([{"params": [p], "mask": None}], lr=0.02, eps=EPS, weight_decay=0.1)
    ref = ReferenceMaskedAdamW([q], lambda i, w: torch.ones_like(w, dtype=torch.bool),
                               weight_decay=0.1, update_interval=None)
    for _ in range(10):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
        opt.step()
        ref.step(0.02)
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def _run(opt, params, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip(dtype):
    def make(weights):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        groups = [{"params": params[:2], "mask": "lift", "lora_rank": 2, "filter_rank": 3,
                   "update_interval": 4}, {"params": params[2:]}]
        return params, SparseAdamW(groups, lr=0.05, weight_decay=0.01)

    weights = [torch.randn(12, 16).to(dtype), torch.randn(16, 12).to(dtype),
               torch.randn(6).to(dtype)]
    params, opt = make(weights)
    _run(opt, params, 6, seed=1)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed_params, resumed = make([p.detach() for p in params])
    resumed.load_state_dict(torch.load(buffer))
    for p, q in zip(params[:2], resumed_params[:2]):
        assert resumed.state[q]["indices"].dtype == torch.int32
        assert resumed.state[q]["exp_avg"].dtype == torch.float32
        assert torch.equal(resumed.state[q]["indices"], opt.state[p]["indices"])
    _run(opt, params, 6, seed=2)
    _run(resumed, resumed_params, 6, seed=2)
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)
    assert resumed.pop_refresh_events()[0]["step"] == 8


def test_one_group_per_matrix_in_small_chunks_equals_one_group(monkeypatch):
    weights = _tiny_weights()
    settings = {"mask": "lift", "lora_rank": 2, "filter_rank": 3, "update_interval": 3}
    shared = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = SparseAdamW([{"params": shared, **settings}], lr=0.05)
    _run(opt, shared, 7, seed=4)
    # The trainer's layout: one named group per matrix; tiny chunks force several flushes.
    monkeypatch.setattr(optim_update, "_CHUNK_ENTRIES", 10)
    split = [torch.nn.Parameter(w.clone()) for w in weights]
    per_matrix = SparseAdamW([{"params": [p], "param_names": [f"w{i}"], **settings}
                              for i, p in enumerate(split)], lr=0.05)
    _run(per_matrix, split, 7, seed=4)
    for p, q in zip(shared, split):
        assert torch.equal(p, q)
    events = per_matrix.pop_refresh_events()
    assert [e["step"] for e in events] == [3, 6]
    assert set(events[0]["per_param"]) == {"w0", "w1"}
    assert events[0]["changed_fraction"] == opt.pop_refresh_events()[0]["changed_fraction"]


def test_clip_grad_norm_matches_torch_on_dense_grads():
    params = [torch.nn.Parameter(torch.randn(8, 10)), torch.nn.Parameter(torch.randn(4))]
    opt = SparseAdamW([{"params": params[:1], "mask": "magnitude", "lora_rank": 1},
                       {"params": params[1:]}], lr=0.1)
    for norm_type in (2.0, math.inf):
        for p in params:
            p.grad = torch.randn_like(p) * 3
        copies = [p.grad.clone().requires_grad_(False) for p in params]
        holders = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for h, c in zip(holders, copies):
            h.grad = c
        expected = torch.nn.utils.clip_grad_norm_(holders, 1.5, norm_type=norm_type)
        total = opt.clip_grad_norm_(1.5, norm_type=norm_type)
        torch.testing.assert_close(total, expected)
        for p, h in zip(params, holders):
            torch.testing.assert_close(p.grad, h.grad)


def test_gathered_grads_are_clipped_and_cleared():
    # With the dense gradients freed, clipping still uses the norm of the whole dense
    # gradient (as a trainer holding dense grads would) and scales the masked entries.
    weights = _tiny_weights()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    dense = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = SparseAdamW([{"params": params, "mask": "magnitude", "lora_rank": 2}], lr=0.1,
                      free_dense_grads=True)
    batches = [(torch.randn(8, 12), torch.randn(8, 10))]
    _backward_two_micro_batches(params, batches)
    _backward_two_micro_batches(dense, batches)
    assert all(p.grad is None for p in params)
    expected = torch.nn.utils.clip_grad_norm_(dense, 0.01)
    torch.testing.assert_close(opt.clip_grad_norm_(0.01), expected)
    for p, d in zip(params, dense):
        torch.testing.assert_close(opt._grad_buffers[p], d.grad[opt.mask_of(p)])
    opt.zero_grad()
    assert opt.clip_grad_norm_(0.01).item() == 0.0
    opt.remove_grad_hooks()
    _backward_two_micro_batches(params, batches)
    assert all(p.grad is not None for p in params) and not opt._grad_buffers


def test_named_params_label_refresh_events():
    a, b = torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8, 6))
    opt = SparseAdamW([{"params": [("a", a), ("b", b)], "mask": "random", "lora_rank": 1,
                        "update_interval": 2, "seed": 3}], lr=0.1)
    _run(opt, [a, b], 2, seed=0)
    (event,) = opt.pop_refresh_events()
    assert set(event["per_param"]) == {"a", "b"} and event["step"] == 2
    assert 0 < event["changed_fraction"] <= 1


def test_random_masks_are_reproducible_per_seed():
    def masks(seed):
        p = torch.nn.Parameter(torch.zeros(10, 10))
        opt = SparseAdamW([p], mask="random", lora_rank=1, seed=seed)
        return opt.mask_of(p)

    assert torch.equal(masks(0), masks(0))
    assert not torch.equal(masks(0), masks(1))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mask": "largest"}, "unknown mask 'largest'"),
        ({"lr": 0.0}, "learning rate (lr) must be a number > 0"),
        ({"update_interval": 0}, "update_interval must be a whole number >= 1"),
        ({"filter_rank": 0}, "filter rank 0 is out of range"),
        ({"filter_rank": 9}, "filter rank 9 is out of range for a 8x10 matrix"),
        ({"filter_rank": None}, "needs filter_rank"),
        ({"lora_rank": None}, "needs lora_rank"),
        ({"lora_rank": 0}, "budget (LoRA) rank must be a whole number >= 1"),
        ({"betas": (0.9, 1.0)}, "beta2 must be in [0, 1)"),
        ({"svd": "fast"}, "unknown svd mode 'fast'"),
        ({"weight_decay": -1.0}, "weight_decay must be a number >= 0"),
        ({"params": [torch.nn.Parameter(torch.randn(5))]}, "needs contiguous 2-D float"),
    ],
)
def test_bad_settings_raise_lift_error(settings, message):
    group = {"params": [torch.nn.Parameter(torch.randn(8, 10))], "mask": "lift",
             "lora_rank": 1, "filter_rank": 2, "update_interval": 5, **settings}
    with pytest.raises(LiftError) as caught:
        SparseAdamW([group], lr=settings.get("lr", 1e-3))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rejected_group_leaves_the_optimizer_unchanged():
    good, bad = torch.nn.Parameter(torch.randn(8, 10)), torch.nn.Parameter(torch.randn(8, 10))
    opt = SparseAdamW([good], mask="magnitude", lora_rank=1, free_dense_grads=True)
    with pytest.raises(LiftError, match="filter rank 99 is out of range"):
        opt.add_param_group({"params": [bad], "mask": "lift", "filter_rank": 99})
    assert len(opt.param_groups) == 1 and bad not in opt.state
    (bad.sum() + good.sum()).backward()
    assert bad.grad is not None and good.grad is None  # only the accepted param is hooked


def test_cpu_bfloat16_masked_param_keeps_fp32_moments():
    p = torch.nn.Parameter(torch.randn(12, 16, dtype=torch.bfloat16))
    start = p.detach().clone()
    opt = SparseAdamW([p], lr=0.1, mask="lift", lora_rank=1, filter_rank=2)
    p.grad = torch.randn_like(p)
    opt.step()
    mask = opt.mask_of(p)
    assert opt.state[p]["exp_avg"].dtype == torch.float32
    assert torch.equal(p.detach()[~mask], start[~mask])
    assert (p.detach()[mask] != start[mask]).any()


@pytest.mark.gpu
def test_cuda_bfloat16_step():
    p = torch.nn.Parameter(torch.randn(64, 96, device="cuda", dtype=torch.bfloat16))
    start = p.detach().clone()
    opt = SparseAdamW([p], lr=0.1, mask="lift", lora_rank=4, filter_rank=8,
                      update_interval=1, free_dense_grads=True)
    (p.float() ** 2).sum().backward()
    assert p.grad is None
    opt.clip_grad_norm_(1.0)
    opt.step()
    state = opt.state[p]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg"].is_cuda
    assert state["indices"].is_cuda and p.dtype == torch.bfloat16
    assert (p.detach() != start).sum() <= lora_budget((64, 96), 4)
    assert opt.pop_refresh_events()[0]["step"] == 1
