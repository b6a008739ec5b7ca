"""The ranks of a data-parallel run, as one Trainer sees them.

Every rank draws the same global batch (the batch iterator is seeded alike everywhere) and
trains on its own rows of it; the loss is the rank's token-loss sum divided by the global
batch's token count, so summing the ranks' gradients gives exactly the gradient of one
process on the whole batch, whatever the split of tokens between ranks. Masks are computed
on every rank from identical weights and verified by checksum at every refresh: a mismatch
(ranks that diverged) fails the run at once instead of training different models.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lift_core.distributed.exchange import ByteCounter, make_gatherer, sum_dense_grads
from lift_core.errors import LiftError

IGNORE_INDEX = -100  # label of prompt and padding tokens (no loss)


class RanksDiverged(LiftError):
    """Ranks that must hold the same masks or weights hold different ones."""


class DataParallel:
    """Rank arithmetic and collectives of one run; with one process every method is the
    single-process path (no collective, no extra work).

    Args:
        accelerator: the run's accelerate Accelerator (its state knows the ranks).
        exchange: "dense" or "sparse" gradient exchange for masked parameters.
    """

    def __init__(self, accelerator, exchange: str = "dense"):
        self.world_size = accelerator.num_processes
        self.rank = accelerator.process_index
        self.device = accelerator.device
        self.exchange = exchange
        self.counter = ByteCounter()
        self.bytes_per_step: list[int] = []  # bytes this rank exchanged at each step

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gatherer_factory(self):
        """What SparseAdamW builds its gradient gatherer with (None: its own default)."""
        return make_gatherer(self.exchange, self.counter) if self.active else None

    # --- the step -------------------------------------------------------------------

    def forward_loss(self, model, batch: dict) -> torch.Tensor:
        """The loss to back-propagate: the model's own loss with one process; else this
        rank's token-loss sum over its rows divided by the global batch's token count."""
        if not self.active:
            return model(**batch).loss
        labels = batch["labels"]
        total_tokens = (labels[:, 1:] != IGNORE_INDEX).sum().clamp(min=1)
        rows = self.my_rows(labels.shape[0])
        logits = model(input_ids=batch["input_ids"][rows],
                       attention_mask=batch["attention_mask"][rows]).logits
        return token_loss_sum(logits, labels[rows]) / total_tokens

    def my_rows(self, batch_size: int) -> slice:
        """This rank's contiguous rows of a global batch (the first ranks take one more
        when it does not divide evenly)."""
        if batch_size < self.world_size:
            raise LiftError(f"batch_size {batch_size} is smaller than the {self.world_size} "
                            "processes: every process needs at least one example per step")
        share, extra = divmod(batch_size, self.world_size)
        start = self.rank * share + min(self.rank, extra)
        return slice(start, start + share + (self.rank < extra))

    def global_loss(self, loss: torch.Tensor) -> float:
        """The run's loss value (the same on every rank, so all agree on a NaN)."""
        if not self.active:
            return loss.item()
        value = loss.detach().float().reshape(1).clone()
        self.counter.all_reduce_(value)
        return value.item()

    def sum_gradients(self, optimizer) -> None:
        """Make every gradient the optimizer reads the run's gradient (sum over ranks)."""
        if not self.active:
            return
        sum_dense_grads([p for g in optimizer.param_groups for p in g["params"]], self.counter)
        optimizer.grad_gatherer.exchange()

    def end_step(self) -> None:
        """Close the step's byte count (call at the end of the step; the stop agreement
        before it and a refresh's mask check count in it)."""
        if self.active:
            self.bytes_per_step.append(self.counter.take())

    def median_step_bytes(self) -> int | None:
        """Median bytes this rank exchanged per step (None with one process)."""
        steps = sorted(self.bytes_per_step)
        return steps[len(steps) // 2] if steps else None

    # --- agreement ------------------------------------------------------------------

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any (a stop request, say)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        self.counter.all_reduce_(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def check_masks(self, optimizer, step: int) -> None:
        """Fail with RanksDiverged unless every rank holds the same masks."""
        if not self.active:  # one process: nothing to compare, so nothing to compute
            return
        sums = [mask_checksum(state["indices"]) for state in optimizer.state.values()
                if "indices" in state]
        self._check_same(sums, f"the masks differ between processes at step {step}")

    def check_weights(self, params) -> None:
        """Fail with RanksDiverged unless every rank starts from the same trainable weights."""
        if not self.active:
            return
        sums = [p.detach().float().sum().item() for p in params]
        self._check_same(sums, "the processes loaded different weights (a model or seed "
                               "that is not the same everywhere?)")

    def _check_same(self, values: list[float], what: str) -> None:
        if not values:
            return
        local = torch.tensor(values, dtype=torch.float64, device=self.device)
        low, high = local.clone(), local.clone()
        self.counter.all_reduce_(low, op=dist.ReduceOp.MIN)
        self.counter.all_reduce_(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RanksDiverged(f"{what}: the run cannot go on as one model")


def lost_process_message(exc: BaseException, step: int) -> str | None:
    """The run's one-line failure when ``exc`` says another process of the run ended or
    stopped answering (a collective's transport error); None for any other error."""
    text = str(exc)
    if not isinstance(exc, RuntimeError) or not (
            isinstance(exc, dist.DistError) or any(w in text for w in _TRANSPORT_WORDS)):
        return None
    reason = next((w for w in _TRANSPORT_WORDS if w in text), "no answer")
    return (f"another process of this run ended or stopped answering at step {step} "
            f"({reason.lower()}); the record keeps what was done up to there")


# What gloo and NCCL say when a peer process is gone (its socket closed, or a timeout).
_TRANSPORT_WORDS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
                    "Timed out", "timed out", "NCCL communicator was aborted")


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled tokens (fp32, like transformers)."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, vocab),
                           labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")


def mask_checksum(indices: torch.Tensor) -> float:
    """A number that differs, in practice, between two different sets of flat indices."""
    idx = indices.long()
    # Weighted so that moving one entry changes the sum; float64 holds it exactly enough.
    return float(idx.numel()) + float((idx.double() * ((idx % 7919) + 1).double()).sum())
