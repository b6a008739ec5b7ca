"""A fine-tuning run's data: the three example sets, and endless training batches.

:func:`load_run_data` reads the training, target-eval and source-eval examples (the user's
files or the built-in tasks) before any model is loaded, so a bad file fails at once.
:class:`TrainBatches` tokenizes every training example once, cut to ``max_length``
tokens, so memory never grows with the length of a record, and leaves out (with a
warning) the examples whose prompt leaves no room for an answer token.
"""

from __future__ import annotations

import logging

import torch

from lift_core.errors import LiftError
from lift_core.train import tasks
from lift_core.train.encoding import encode_example, eos_and_pad_ids, pad_for_training

_log = logging.getLogger(__name__)  # the CLI prints these as "warning: ..." lines


def load_run_data(config) -> dict[str, list[tasks.Example]]:
    """``{"train", "target", "source"}`` examples for a :class:`FinetuneConfig`.

    Eval sets are cut to ``config.eval_limit`` examples, evenly spread.

    Raises:
        LiftError: a data file that cannot be read or holds no records.
    """

    def load(path, builtin):
        return tasks.load_examples(path) if path else builtin()

    data = {
        "train": load(config.train_data,
                      lambda: tasks.target_train_examples(config.train_examples, seed=config.seed)),
        "target": load(config.target_eval, tasks.target_eval_examples),
        "source": load(config.source_eval, tasks.source_eval_examples),
    }
    for key in ("target", "source"):
        data[key] = evenly_spread(data[key], config.eval_limit)
    return data


def evenly_spread(examples: list, limit: int | None) -> list:
    """At most ``limit`` of ``examples`` (None: all), evenly spread, so every sub-task of a
    sorted set stays in."""
    n = len(examples)
    if not limit or limit >= n:
        return examples
    return [examples[i * n // limit] for i in range(limit)]


class TrainBatches:
    """Endless batches of training examples, reshuffled every epoch with a seeded generator.

    Every example is tokenized once, up front, to at most ``max_length`` tokens
    (:func:`lift_core.train.encoding.encode_example`), so no record, however long, costs more.
    Examples whose prompt alone fills ``max_length`` have nothing to learn; they are left
    out, counted in ``dropped`` and reported with a warning.

    Raises:
        LiftError: when no example is left.
    """

    def __init__(self, examples, tokenizer, *, batch_size, seed, max_length, device):
        _, self.pad_id = eos_and_pad_ids(tokenizer)
        encoded = [encode_example(tokenizer, e, max_length) for e in examples]
        self.encoded = [e for e in encoded if e is not None]
        self.dropped = len(encoded) - len(self.encoded)
        why = (f"their prompt fills max_length ({max_length} tokens), leaving no answer token "
               "to learn from; shorten the prompts or raise max_length")
        if not self.encoded:
            raise LiftError(f"all {len(encoded)} training examples are unusable: {why}")
        if self.dropped:
            _log.warning("%d of %d training examples left out: %s",
                         self.dropped, len(encoded), why)
        self.batch_size, self.device = batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch: right-padded ``input_ids``, ``attention_mask``, ``labels``."""
        while len(self.order) < self.batch_size:  # top up with a fresh shuffled epoch
            self.order += torch.randperm(len(self.encoded), generator=self.generator).tolist()
        picked, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        batch = pad_for_training([self.encoded[i] for i in picked], self.pad_id)
        return {k: v.to(self.device) for k, v in batch.items()}

    def state_dict(self) -> dict:
        """The position in the data order: the shuffling generator's state and what is left
        of the current epoch (a checkpoint saves it to resume the same batches)."""
        return {"generator": self.generator.get_state(), "order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` of batches over the same examples."""
        self.generator.set_state(state["generator"])
        self.order = list(state["order"])
