"""The trainer: a fine-tuning run's live objects, and one optimizer step at a time.

:class:`Trainer` sets a run up from a :class:`~lift_core.train.config.FinetuneConfig` (device
and precision through accelerate, the data, the model, the method's trainable set and
optimizer, the learning-rate schedule) and keeps every part reachable: ``model`` (what
forward runs on, prepared by accelerate), ``unwrapped_model`` (the model itself, for
generating and saving), ``optimizer``, ``scheduler``, ``tokenizer``, ``batches`` (the data
iterator, whose position :meth:`~lift_core.train.data.TrainBatches.state_dict` saves)
and ``accelerator``. :meth:`Trainer.step` is one optimizer step and :meth:`Trainer.evaluate`
measures target and source accuracy. :func:`lift_core.train.loop.finetune` is a loop over
them that records and stops; the benchmarks time the same step.

What a checkpoint needs is reachable here: ``optimizer.state_dict()`` (masks, moments),
``scheduler.state_dict()``, ``batches.state_dict()`` and ``steps_done``;
:mod:`lift_core.train.checkpoint` saves and restores them, :mod:`lift_core.train.export`
saves what was trained. Evaluation generates with ``unwrapped_model``, never a process
wrapper (DDP cannot ``generate``).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable

import torch

from lift_core.distributed.data_parallel import DataParallel
from lift_core.errors import LiftError
from lift_core.runs.records import PeakMemory

if TYPE_CHECKING:
    from lift_core.train.config import FinetuneConfig

EVAL_SETS = ("target", "source")


class NonFiniteLoss(LiftError):
    """The loss became NaN or infinite (usually a learning rate too high); nothing moved."""


class Trainer:
    """One fine-tuning run (``config``): :meth:`setup` once, then :meth:`step` and
    :meth:`evaluate` as often as wanted."""

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.accelerator = self.device = self.memory = self.parallel = None
        self.model = self.optimizer = self.scheduler = None
        self.tokenizer = self.batches = self.method_setup = None
        self.data: dict[str, list] = {}  # "train", "target", "source" examples
        self.model_params = 0  # every parameter of the model as loaded
        self.steps_done = 0  # optimizer steps taken
        self.mask_refreshes = 0  # mask refreshes that happened during training
        self.setup_seconds: dict[str, float] = {}  # "load_seconds", "mask_seconds" (masks/adapter)
        self.generations_kept = 0  # evaluate() keeps this many answers of each eval set ...
        self.generations: list[dict] = []  # ... here (task, prompt, answer, gold, correct)
        # (name, fn) -> fn() runs each step's phases; the benchmarks swap in a timing one.
        self.phase_runner: Callable[[str, Callable], object] = run_phase
        self.mask_progress: Callable[[int, int, str], None] | None = None  # set-up masks, see setup_method

    def setup(self, model=None) -> Trainer:
        """Build everything a step needs (data first: a bad file fails before a model loads).

        Args:
            model: train this built causal LM instead of loading ``config.model`` (the
                benchmarks); then there is no data or evaluation, and :meth:`step` needs
                its batch.

        Raises:
            LiftError: bad data, a model that cannot be loaded or fine-tuned, a run that
                cannot fit in memory, settings the model does not allow.
        """
        from lift_core.train.data import TrainBatches

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # LoRA's initialisation and anything else drawn at set-up
        self.accelerator = make_accelerator(cfg.device)
        self.device = self.accelerator.device
        self.parallel = DataParallel(self.accelerator, exchange=cfg.grad_exchange)
        self.memory = PeakMemory(self.device)
        if model is None:
            self.data, self.tokenizer, model, seconds = load_for_training(cfg, self.device)
            self.setup_seconds["load_seconds"] = seconds
        self.model_params = sum(p.numel() for p in model.parameters())
        set_up_method(self, model.to(self.device))
        if self.data:
            self.batches = TrainBatches(self.data["train"], self.tokenizer,
                                        batch_size=cfg.batch_size, seed=cfg.seed,
                                        max_length=cfg.max_length, device=self.device)
        return self

    @property
    def unwrapped_model(self):
        """The model without accelerate's process wrappers (peft-wrapped for LoRA)."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def trainable_params(self) -> int:
        """Numbers the method trains (masked entries, LoRA factors, or every block linear)."""
        return self.method_setup.trainable_params

    def step(self, batch: dict | None = None) -> dict:
        """One optimizer step: forward, backward, clipping, optimizer step, schedule step.

        Args:
            batch: ``input_ids`` / ``attention_mask`` / ``labels`` on the device; None takes
                the next batch of :attr:`batches`.

        Returns:
            ``{"step", "loss", "lr"}`` (lr: the rate this step trained with), plus
            ``"mask_churn"`` when a sparse method refreshed its masks at this step.

        Raises:
            NonFiniteLoss: the loss is NaN or infinite; no weight was changed.
        """
        batch = self.batches.next() if batch is None else batch
        step, lr = self.steps_done + 1, self.scheduler.get_last_lr()[0]
        loss = self.phase_runner("forward", lambda: self._forward(batch))
        value = self.parallel.global_loss(loss)  # every rank sees the run's loss
        if not math.isfinite(value):
            raise NonFiniteLoss(f"the loss became {value} at step {step}; training stopped "
                                f"(try a lower learning rate than {self.config.lr_used:g})")
        self.phase_runner("backward", lambda: self._backward(loss))
        self.phase_runner("optimizer", self._optimizer_step)
        self.steps_done = step
        row = {"step": step, "loss": value, "lr": lr}
        churn = mask_churn(self.optimizer.pop_refresh_events())
        if churn is not None:
            self.parallel.check_masks(self.optimizer, step)
            self.mask_refreshes += 1
            row["mask_churn"] = churn
        self.parallel.end_step()
        return row

    def _forward(self, batch: dict) -> torch.Tensor:
        with self.accelerator.autocast():
            loss = self.parallel.forward_loss(self.model, batch)
        self.memory.sample()
        return loss

    def _backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)
        self.memory.sample()

    def _optimizer_step(self) -> None:
        self.parallel.sum_gradients(self.optimizer)
        if self.config.max_grad_norm:
            self.optimizer.clip_grad_norm_(self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.memory.sample()

    def evaluate(self, *, between_batches: Callable[[], None] | None = None,
                 limit: int | None = None) -> dict:
        """Greedy exact-match accuracy on the target and the source eval sets; the first
        ``generations_kept`` answers of each set go to ``generations`` (no extra generation).

        Args:
            between_batches: called before each generation batch; raise from it to abandon
                the evaluation (how finetune honours a stop request quickly).
            limit: evaluate at most this many examples of each set, evenly spread (None:
                all); finetune's intermediate evaluations with ``eval_subset``.

        Returns:
            ``{"target_acc": float, "source_acc": float}``, each in 0..1.
        """
        result, self.generations = evaluate_sets(self, between_batches, limit)
        return result

    def close(self) -> None:
        """Drop the optimizer's gradient hooks, so the model back-propagates normally again
        (for a caller that keeps the model or trains it with another optimizer)."""
        if self.optimizer is not None:
            self.optimizer.remove_grad_hooks()


def set_up_method(trainer: Trainer, model) -> None:
    """The method's trainable set, optimizer and schedule on ``model`` (Trainer.setup)."""
    from lift_core.train.methods import setup_method

    cfg, parallel = trainer.config, trainer.parallel
    began = time.perf_counter()
    trainer.method_setup = setup_method(
        model, cfg.method, lr=cfg.lr_used, lora_rank=cfg.lora_rank,
        filter_rank=cfg.filter_rank, update_interval=cfg.update_interval, svd=cfg.svd,
        mask_progress=trainer.mask_progress,
        seed=cfg.seed, make_gatherer=parallel.gatherer_factory())
    trainer.setup_seconds["mask_seconds"] = time.perf_counter() - began
    # prepare_model adds bf16 autocast to forward on CUDA (generate goes through it too).
    # Several processes: no DDP wrapper, DataParallel exchanges the gradients itself.
    trainer.model = trainer.accelerator.prepare_model(trainer.method_setup.model,
                                                      evaluation_mode=parallel.active)
    parallel.check_weights(trainer.method_setup.trainable_tensors())
    parallel.check_masks(trainer.method_setup.optimizer, step=0)
    trainer.model.train()
    trainer.optimizer = trainer.method_setup.optimizer
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(
        trainer.optimizer, linear_schedule(cfg.warmup_steps, cfg.steps))


def load_for_training(cfg: FinetuneConfig, device) -> tuple[dict, object, object, float]:
    """Data, tokenizer and model of ``cfg``, cheapest checks first, and the model's load time.

    The memory estimate runs from the config alone, before anything is allocated; data loads
    before the model (a bad file fails fast); a tokenizer without <eos> is refused before the
    model loads (after the cheaper check that the model is a causal LM at all).
    """
    from lift_core.models.loading import check_causal_lm, load_model, load_tokenizer
    from lift_core.models.preflight import check_training_fits
    from lift_core.train.data import load_run_data

    check_training_fits(cfg, device)
    data = load_run_data(cfg)
    check_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code,
                               require_eos=True)
    began = time.perf_counter()
    model = load_model(cfg.model, kind="causal", trust_remote_code=cfg.trust_remote_code,
                       dtype=cfg.dtype)
    return data, tokenizer, model, time.perf_counter() - began


def evaluate_sets(trainer: Trainer, between_batches, limit: int | None = None) -> tuple[dict, list[dict]]:
    """Accuracy on each eval set of ``trainer`` (at most ``limit`` examples of each, evenly
    spread) and the answers it keeps (Trainer.evaluate)."""
    from lift_core.train.data import evenly_spread

    result, kept = {}, []
    for name in EVAL_SETS:
        samples: list[dict] = []
        examples = evenly_spread(trainer.data[name], limit)
        result[f"{name}_acc"] = eval_accuracy(trainer.unwrapped_model, trainer.tokenizer,
                                              examples, trainer.config, between_batches,
                                              samples=samples, keep=trainer.generations_kept)
        kept += [{"task": name, **sample} for sample in samples]
    return result, kept


def run_phase(name: str, fn: Callable):
    """The default phase runner: ``fn()``."""
    return fn()


def mask_churn(events: list[dict]) -> float | None:
    """Fraction of mask entries that changed at a step's refreshes (k-weighted); None if none.

    Args:
        events: SparseAdamW.pop_refresh_events(); the first masks (step 0) do not count.
    """
    events = [e for e in events if e.get("step", 1) > 0]
    if not events:
        return None
    weights = [e.get("entries", 1) for e in events]
    return sum(w * e["changed_fraction"] for w, e in zip(weights, events)) / sum(weights)


def eval_accuracy(model, tokenizer, examples: list, config: FinetuneConfig,
                  between_batches: Callable[[], None] | None = None, *,
                  samples: list | None = None, keep: int = 0) -> float:
    """Greedy exact-match accuracy of ``model`` on ``examples``, ``config.eval_batch_size``
    prompts at a time, calling ``between_batches`` (if given) before each batch; the first
    ``keep`` examples' prompt, answer, gold and correct are appended to ``samples``."""
    from lift_core.train.evaluation import answer_length, generate_completions, score

    if not examples:
        raise LiftError("no examples to evaluate")
    size, limit = config.eval_batch_size, config.max_length
    # Prompts keep their last max_length tokens and answers count up to max_length, so a
    # giant eval record costs no more than a max_length one.
    max_new = config.max_new_tokens or answer_length(tokenizer, examples, max_tokens=limit)
    hits = 0
    for start in range(0, len(examples), size):
        if between_batches is not None:
            between_batches()
        chunk = examples[start: start + size]
        answers = generate_completions(model, tokenizer, [e.prompt for e in chunk],
                                       max_new_tokens=max_new, batch_size=size,
                                       max_prompt_tokens=limit)
        correct = score(answers, chunk)
        hits += sum(correct)
        if samples is not None and len(samples) < keep:
            samples += [{"prompt": e.prompt, "answer": a.strip(), "gold": e.answer, "correct": c}
                        for e, a, c in zip(chunk, answers, correct)][: keep - len(samples)]
    return hits / len(examples)


def linear_schedule(warmup_steps: int, total_steps: int):
    """LR multiplier for LambdaLR: linear 0 -> 1 over warmup, then linear 1 -> 0 at the end."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def make_accelerator(device: str):
    """CUDA + bf16 autocast when there is a GPU (and ``device`` allows), else fp32 on CPU."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = device != "cpu" and torch.cuda.is_available()
    kwargs = {"cpu": not cuda, "mixed_precision": "bf16" if cuda else "no"}
    try:
        return Accelerator(**kwargs)
    except ValueError:
        # accelerate keeps one process-wide state; an earlier run in this process (the app)
        # may have used another device or precision. Runs are sequential, so reset it.
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA or host out-of-memory error."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, (oom, MemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )
