"""The parts of lift_core.optim, each alone: update rule, step batches, mask lifecycle,
gradient gatherer with clipping; then what the optimizer built from them promises on top:
a state_dict that resumes training bit-exactly, and a gatherer that can be swapped.

tests/test_optim.py checks the whole optimizer against an independent dense reference.
"""

import copy
import gc
import io
import math

import pytest
import torch

import lift_core.optim.update as optim_update
from lift_core.errors import LiftError
from lift_core.lowrank.masks import compute_mask, lora_budget
from lift_core.optim import (
    AdamWRule,
    GradientGatherer,
    MaskLifecycle,
    SparseAdamW,
    carry_moments,
    churn_events,
    select_mask,
)
from lift_core.optim.mask_state import indices_to_mask
from lift_core.optim.update import StepBatches, check_adamw_settings, zero_moments

RULE = AdamWRule(lr=0.05, beta1=0.9, beta2=0.95, eps=1e-6, weight_decay=0.1)


# --- the update rule ------------------------------------------------------------------------


def test_rule_follows_the_transformers_formula_per_entry():
    # Two vectors at different steps t (as two matrices with different histories).
    weights = [torch.randn(5), torch.randn(3)]
    moments = [zero_moments(5, "cpu"), zero_moments(3, "cpu")]
    expected = [[float(x) for x in w] for w in weights]
    m_ref = [[0.0] * 5, [0.0] * 3]
    v_ref = [[0.0] * 5, [0.0] * 3]
    starts = [0, 6]
    for i in range(3):
        grads = [torch.randn(5), torch.randn(3)]
        steps = [s + i + 1 for s in starts]
        RULE.apply_(weights, grads, [m["exp_avg"] for m in moments],
                    [m["exp_avg_sq"] for m in moments], steps)
        for j, (g, t) in enumerate(zip(grads, steps)):
            size = RULE.lr * math.sqrt(1 - RULE.beta2**t) / (1 - RULE.beta1**t)
            for e, ge in enumerate(g.tolist()):
                m_ref[j][e] = RULE.beta1 * m_ref[j][e] + (1 - RULE.beta1) * ge
                v_ref[j][e] = RULE.beta2 * v_ref[j][e] + (1 - RULE.beta2) * ge * ge
                w = expected[j][e] - size * m_ref[j][e] / (math.sqrt(v_ref[j][e]) + RULE.eps)
                expected[j][e] = w - RULE.lr * RULE.weight_decay * w  # decay after the step
    for w, e, m, mr in zip(weights, expected, moments, m_ref):
        torch.testing.assert_close(w, torch.tensor(e), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m["exp_avg"], torch.tensor(mr), rtol=1e-5, atol=1e-7)


def test_rule_equals_torch_adamw_without_eps_and_decay():
    rule = AdamWRule(lr=0.01, beta1=0.9, beta2=0.95, eps=0.0, weight_decay=0.0)
    ours, theirs = torch.randn(20), torch.nn.Parameter(torch.randn(20))
    ours.copy_(theirs.detach())
    moments = zero_moments(20, "cpu")
    torch_opt = torch.optim.AdamW([theirs], lr=0.01, betas=(0.9, 0.95), eps=0.0, weight_decay=0.0)
    for t in range(1, 8):
        theirs.grad = torch.randn(20)
        rule.apply_([ours], [theirs.grad.clone()], [moments["exp_avg"]],
                    [moments["exp_avg_sq"]], [t])
        torch_opt.step()
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)


def test_rule_of_group_is_a_hashable_batching_key():
    group = {"lr": 0.05, "betas": (0.9, 0.95), "eps": 1e-6, "weight_decay": 0.1}
    assert AdamWRule.of_group(group) == RULE and len({RULE, AdamWRule.of_group(group)}) == 1
    with pytest.raises(LiftError, match="betas must be a pair"):
        check_adamw_settings({**group, "betas": (0.9,)})


# --- step batches ---------------------------------------------------------------------------


def _batch_case():
    """A masked bf16 matrix, a dense fp32 one (updated in place) and a transposed view."""
    masked = torch.randn(6, 8, dtype=torch.bfloat16)
    dense = torch.randn(4, 5)
    transposed = torch.randn(5, 3).t()  # not contiguous: updated through a copy
    indices = torch.tensor([1, 7, 8, 20, 47])
    return [masked, dense, transposed], [indices, None, None]


def _step_batches(params, indices, seed):
    generator = torch.Generator().manual_seed(seed)
    batches, states = StepBatches(), []
    for p, where in zip(params, indices):
        n = p.numel() if where is None else where.numel()
        state = {"step": 1, **zero_moments(n, "cpu")}
        states.append(state)
        batches.add(p, RULE, state, where, torch.randn(n, generator=generator))
    batches.flush()
    return states


def test_batches_write_back_only_the_trained_entries_and_chunking_changes_nothing(monkeypatch):
    params, indices = _batch_case()
    start = [p.clone() for p in params]
    states = _step_batches(params, indices, seed=0)
    changed = (params[0] != start[0]).reshape(-1).nonzero().squeeze(1)
    assert set(changed.tolist()) <= set(indices[0].tolist()) and changed.numel() > 0
    assert params[0].dtype == torch.bfloat16 and (params[1] != start[1]).all()
    assert (params[2] != start[2]).all() and not params[2].is_contiguous()
    # Against the rule applied by hand to the same vectors.
    generator = torch.Generator().manual_seed(0)
    for p0, p, where, state in zip(start, params, indices, states):
        flat = p0.reshape(-1).float().clone()  # the rule works in place
        weight = flat if where is None else flat[where]
        n = weight.numel()
        moments = zero_moments(n, "cpu")
        RULE.apply_([weight], [torch.randn(n, generator=generator)], [moments["exp_avg"]],
                    [moments["exp_avg_sq"]], [1])
        got = p.reshape(-1).float() if where is None else p.reshape(-1).float()[where]
        torch.testing.assert_close(got, weight.to(p.dtype).float())
        assert torch.equal(state["exp_avg"], moments["exp_avg"])
    monkeypatch.setattr(optim_update, "_CHUNK_ENTRIES", 4)  # a flush after every add
    chunked, _ = _batch_case()
    for p, p0 in zip(chunked, start):
        p.copy_(p0)
    _step_batches(chunked, indices, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(params, chunked))


# --- the mask lifecycle ---------------------------------------------------------------------

GROUP = {"mask": "lift", "lora_rank": 2, "filter_rank": 3, "svd": "exact", "seed": 5,
         "update_interval": 2}


def test_select_mask_is_the_strategy_mask_as_sorted_int32_indices():
    p = torch.randn(20, 30)
    indices = select_mask(p, GROUP, position=0, refresh=0)
    assert indices.dtype == torch.int32 and torch.all(indices[1:] > indices[:-1])
    assert indices.numel() == lora_budget((20, 30), 2)
    expected = compute_mask("lift", p, k=indices.numel(), filter_rank=3)
    assert torch.equal(indices_to_mask(indices, p), expected)


def test_random_masks_are_seeded_by_seed_position_and_refresh():
    p = torch.zeros(10, 10)

    def draw(position, refresh, seed=5):
        return select_mask(p, {**GROUP, "mask": "random", "seed": seed}, position, refresh)

    first = draw(1, 0)
    assert torch.equal(first, draw(1, 0))
    for other in (draw(2, 0), draw(1, 1), draw(1, 0, seed=6)):
        assert not torch.equal(first, other)


def test_carry_moments_keeps_survivors_and_starts_newcomers_at_zero():
    old = torch.tensor([1, 3, 5, 7], dtype=torch.int32)
    new = torch.tensor([0, 3, 7, 9], dtype=torch.int32)  # below, inside and above old's range
    moments = {"exp_avg": torch.tensor([10.0, 30.0, 50.0, 70.0]),
               "exp_avg_sq": torch.tensor([1.0, 3.0, 5.0, 7.0])}
    carried, changed = carry_moments(old, new, moments)
    assert changed == 2
    assert carried["exp_avg"].tolist() == [0.0, 30.0, 70.0, 0.0]
    assert carried["exp_avg_sq"].tolist() == [0.0, 3.0, 7.0, 0.0]
    assert moments["exp_avg"].tolist() == [10.0, 30.0, 50.0, 70.0]  # inputs untouched


def test_lifecycle_refreshes_due_updated_params_and_logs_churn():
    torch.manual_seed(3)
    a, b, c = torch.randn(12, 16), torch.randn(16, 12), torch.randn(8, 8)
    groups = [{**GROUP, "params": [a, b], "param_names": ["a", "b"]},
              {**GROUP, "params": [c], "update_interval": 3}]
    lifecycle = MaskLifecycle()
    state = {a: lifecycle.start(a, groups[0], 0), b: lifecycle.start(b, groups[0], 1),
             c: lifecycle.start(c, groups[1], 2)}
    for p in (a, b, c):
        state[p]["exp_avg"].fill_(1.0)
        state[p]["step"] = 2
        p.copy_(torch.randn_like(p))  # new weights, so the masks move
    first = {p: state[p]["indices"].clone() for p in (a, b, c)}
    refreshed = lifecycle.refresh_due(groups, state, updated={id(a), id(c)})
    assert refreshed == [a]  # b was not updated this step; c's interval is 3
    for untouched in (b, c):
        assert torch.equal(state[untouched]["indices"], first[untouched])
    expected = select_mask(a, groups[0], 0, refresh=1)
    assert torch.equal(state[a]["indices"], expected) and state[a]["step"] == 2
    stays = torch.isin(expected, first[a])
    assert 0 < int(stays.sum()) < stays.numel(), "the test should move part of the mask"
    assert torch.all(state[a]["exp_avg"][stays] == 1)
    assert torch.all(state[a]["exp_avg"][~stays] == 0)
    state[c]["step"] = 3
    lifecycle.refresh_due(groups, state, updated={id(c)})
    events = lifecycle.pop_events()
    assert [e["step"] for e in events] == [2, 3] and lifecycle.pop_events() == []
    assert set(events[0]["per_param"]) == {"a"} and set(events[1]["per_param"]) == {"param2"}
    assert events[0]["entries_changed"] == int((~stays).sum())


def test_churn_events_add_up_per_step():
    events = churn_events([(4, "x", 2, 10), (4, "y", 1, 30), (2, "x", 5, 10)])
    assert [e["step"] for e in events] == [2, 4]
    assert events[1] == {"step": 4, "changed_fraction": 3 / 40, "entries_changed": 3,
                         "entries": 40, "per_param": {"x": 0.2, "y": 1 / 30}}


# --- the gradient gatherer and clipping -----------------------------------------------------


def _tracked(free=True):
    weight = torch.nn.Parameter(torch.randn(6, 5))
    indices = torch.tensor([0, 4, 9, 17, 29], dtype=torch.int32)
    gatherer = GradientGatherer(free_dense_grads=free)
    gatherer.track(weight, indices)
    return weight, indices.long(), gatherer


def test_hook_gathers_masked_entries_over_micro_batches_and_frees_the_dense_grad():
    weight, indices, gatherer = _tracked()
    dense = torch.zeros(30)
    sq_norm = torch.tensor(0.0)
    for _ in range(2):
        x = torch.randn(3, 5)
        grad = torch.autograd.grad((x @ weight.T).sin().sum(), weight)[0]  # no hook here
        dense += grad.reshape(-1)
        sq_norm += grad.pow(2).sum()
        (x @ weight.T).sin().sum().backward()
        assert weight.grad is None
    torch.testing.assert_close(gatherer.masked_grad(weight, indices), dense[indices])
    torch.testing.assert_close(gatherer.freed_sq_norms[weight], sq_norm)
    gatherer.zero_grad(set_to_none=False)
    assert gatherer.buffers[weight].abs().sum() == 0 and not gatherer.freed_sq_norms
    gatherer.zero_grad()
    assert gatherer.masked_grad(weight, indices) is None


def test_a_new_mask_drops_the_stale_buffer_and_hooks_stay_single():
    weight, indices, gatherer = _tracked()
    weight.sum().backward()
    gatherer.track(weight, torch.tensor([1, 2, 3], dtype=torch.int32))  # a refresh
    assert not gatherer.buffers and not gatherer.freed_sq_norms
    weight.sum().backward()
    assert gatherer.buffers[weight].tolist() == [1.0, 1.0, 1.0]  # one hook, not two


def test_without_free_dense_grads_the_step_gathers_from_p_grad():
    weight, indices, gatherer = _tracked(free=False)
    (weight**2).sum().backward()
    assert weight.grad is not None and not gatherer.buffers
    torch.testing.assert_close(gatherer.masked_grad(weight, indices),
                               2 * weight.detach().reshape(-1)[indices])


def test_untrack_remove_hooks_and_a_dropped_gatherer_leave_backward_alone():
    weight, _, gatherer = _tracked()
    gatherer.untrack([weight])
    weight.sum().backward()
    assert weight.grad is not None
    weight, _, gatherer = _tracked()
    gatherer.remove_hooks()
    weight.sum().backward()
    assert weight.grad is not None and not gatherer.free_dense_grads
    weight, _, gatherer = _tracked()
    del gatherer
    gc.collect()
    weight.sum().backward()  # the hook holds a weak reference only
    assert weight.grad is not None


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clipping_gathered_and_dense_grads_matches_torch_on_dense_grads(norm_type):
    weight, indices, gatherer = _tracked()
    bias = torch.nn.Parameter(torch.randn(6))
    copies = [torch.nn.Parameter(t.detach().clone()) for t in (weight, bias)]
    x = torch.randn(4, 5)
    for w, b in ((weight, bias), copies):
        ((x @ w.T + b) ** 2).sum().backward()
    weight_grad, bias_grad = (c.grad.clone() for c in copies)
    expected = torch.nn.utils.clip_grad_norm_(copies, 0.5, norm_type=norm_type)
    total = gatherer.clip_grad_norm_([bias.grad], 0.5, norm_type=norm_type)
    if norm_type == 2.0:  # the freed dense norm counts, as in a trainer holding dense grads
        torch.testing.assert_close(total, expected)
    else:  # other norms see the masked entries only
        masked_max = weight_grad.reshape(-1)[indices].abs().max()
        expected = torch.maximum(masked_max, bias_grad.abs().max())
        torch.testing.assert_close(total, expected)
    scale = min(1.0, 0.5 / (expected.item() + 1e-6))
    torch.testing.assert_close(gatherer.buffers[weight], weight_grad.reshape(-1)[indices] * scale)
    torch.testing.assert_close(bias.grad, bias_grad * scale)
    assert GradientGatherer().clip_grad_norm_([], 1.0).item() == 0.0


# --- the optimizer built from the parts -----------------------------------------------------


def _model():
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))


def _optimizer(model, mask, dense_biases=True, **kwargs):
    weights = [model[0].weight, model[2].weight]
    groups = [{"params": [w], "param_names": [f"w{i}"], "mask": mask, "lora_rank": 2,
               "filter_rank": 3, "update_interval": 3} for i, w in enumerate(weights)]
    if dense_biases:
        groups.append({"params": [model[0].bias, model[2].bias], "param_names": ["b0", "b2"]})
    opt = SparseAdamW(groups, lr=0.05, weight_decay=0.01, **kwargs)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    return opt, schedule


def _train(model, opt, schedule, steps, seed):
    generator, events = torch.Generator().manual_seed(seed), []
    for _ in range(steps):
        for _ in range(2):  # micro-batches
            x, y = torch.randn(8, 12, generator=generator), torch.randn(8, 10, generator=generator)
            ((model(x) - y) ** 2).mean().backward()
        opt.clip_grad_norm_(0.5)
        opt.step()
        schedule.step()
        opt.zero_grad()
        events += opt.pop_refresh_events()
    return events


@pytest.mark.parametrize("mask", ["lift", "random"])
def test_state_dict_resumes_training_bit_exactly(mask):
    model = _model()
    opt, schedule = _optimizer(model, mask, free_dense_grads=True)
    _train(model, opt, schedule, 4, seed=1)  # one refresh behind, the next one mid-way
    saved = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "schedule": schedule.state_dict()}, saved)
    copy_of_model = copy.deepcopy(model)
    uninterrupted = _train(model, opt, schedule, 8, seed=2)

    saved.seek(0)
    checkpoint = torch.load(saved)
    resumed, resumed_schedule = _optimizer(copy_of_model, mask, free_dense_grads=True)
    resumed.load_state_dict(checkpoint["optimizer"])
    resumed_schedule.load_state_dict(checkpoint["schedule"])
    assert _train(copy_of_model, resumed, resumed_schedule, 8, seed=2) == uninterrupted
    assert [e["step"] for e in uninterrupted] == [6, 9, 12]
    for p, q in zip(model.parameters(), copy_of_model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(model.parameters(), copy_of_model.parameters()):
        for key, value in opt.state[p].items():
            other = resumed.state[q][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other


class _HalvingGatherer(GradientGatherer):
    """Stands in for a multi-process gatherer that averages masked gradients."""

    def masked_grad(self, p, indices):
        grad = super().masked_grad(p, indices)
        return None if grad is None else grad * 0.5


def test_the_gradient_gatherer_can_be_swapped():
    model, halved = _model(), _model()
    # Masked groups only: the dense path does not go through the gatherer.
    opt, _ = _optimizer(model, "lift", False, grad_gatherer=_HalvingGatherer(True))
    ref, _ = _optimizer(halved, "lift", False, free_dense_grads=True)
    assert opt.free_dense_grads and isinstance(opt.grad_gatherer, _HalvingGatherer)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(8, 12, generator=generator), torch.randn(8, 10, generator=generator)
        ((model(x) - y) ** 2).mean().backward()
        (0.5 * ((halved(x) - y) ** 2).mean()).backward()  # masked grads halved exactly
        for o in (opt, ref):
            o.step()
            o.zero_grad()
    for w, v in ((model[0].weight, halved[0].weight), (model[2].weight, halved[2].weight)):
        assert torch.equal(w, v)
    with pytest.raises(LiftError, match="free_dense_grads goes to the GradientGatherer"):
        SparseAdamW([model[0].weight], grad_gatherer=GradientGatherer(), free_dense_grads=True)
