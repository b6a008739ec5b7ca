"""What the noise-sensitivity test measures after each perturbation of a model.

A causal LM is measured by its loss (teacher-forced, answer tokens only) and its greedy
exact-match accuracy on the built-in source and target eval sets; an encoder by the cosine
similarity between fixed sentences' mean-pooled embeddings now and before any noise. Every
measure is a callable ``measure(model) -> {metric: value}``, built once per model so the
encoded batches and the reference embeddings are computed one time only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lift_core.errors import LiftError
from lift_core.models.loading import is_causal_lm
from lift_core.train.encoding import encode_batch
from lift_core.train.evaluation import accuracy
from lift_core.train.tasks import Example, source_eval_examples, target_eval_examples


@dataclass(frozen=True)
class Metric:
    """One measured quantity: its label and which way is damage."""

    label: str
    """Axis and table label."""
    higher_is_worse: bool
    """True for a loss (more noise damage = higher), False for accuracy and cosine."""


METRICS: dict[str, Metric] = {
    "source_loss": Metric("source loss", True),
    "target_loss": Metric("target loss", True),
    "source_acc": Metric("source accuracy", False),
    "target_acc": Metric("target accuracy", False),
    "cosine": Metric("embedding cosine to the clean model (mean)", False),
    "cosine_min": Metric("embedding cosine to the clean model (worst sentence)", False),
    "spectral_norm_change": Metric("relative change of spectral norm (mean over matrices)", True),
}

# Fixed sentences whose embeddings an encoder must keep: varied topics and lengths.
SENTENCES = (
    "The cat sat quietly on the warm windowsill.",
    "Interest rates rose again this quarter, surprising many investors.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "She missed the last train and walked home in the rain.",
    "The compiler rejected the program because of a missing semicolon.",
    "Mount Everest is the highest mountain above sea level.",
    "Please send me the report before Friday afternoon.",
    "A violin has four strings tuned in perfect fifths.",
    "The team celebrated after winning the championship final.",
    "Vaccines train the immune system to recognise a pathogen.",
    "He could not decide between the blue shirt and the green one.",
    "Low-rank approximations keep the largest singular values of a matrix.",
)

_BATCH = 32  # eval examples per forward pass: small models, small memory


def spread(examples: list[Example], limit: int | None) -> list[Example]:
    """At most ``limit`` examples evenly spaced over the list (the sets are grouped by task,
    so the first N would be one task only); all of them when ``limit`` is None."""
    if limit is None or limit >= len(examples):
        return list(examples)
    step = len(examples) / limit
    return [examples[int(i * step)] for i in range(limit)]


@torch.no_grad()
def answer_loss(model, batches: list[dict]) -> float:
    """Mean cross-entropy per answer token over pre-encoded batches (encode_batch's labels)."""
    total, tokens = 0.0, 0
    for batch in batches:
        count = int((batch["labels"][:, 1:] != -100).sum())  # the model shifts labels by one
        total += float(model(**batch).loss) * count
        tokens += count
    return total / max(tokens, 1)


@torch.no_grad()
def mean_pooled_embeddings(model, batch: dict) -> torch.Tensor:
    """(sentences, hidden) fp32: the last hidden state averaged over each sentence's real
    tokens (the attention mask), the usual sentence embedding of MiniLM-style encoders."""
    hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class CausalMeasure:
    """Loss and greedy accuracy on the built-in source and target eval sets."""

    metrics = ("source_loss", "source_acc", "target_loss", "target_acc")

    def __init__(self, model, tokenizer, *, eval_limit: int | None = None):
        self.tokenizer = tokenizer
        self.sets = {"source": spread(source_eval_examples(), eval_limit),
                     "target": spread(target_eval_examples(), eval_limit)}
        self.batches = {name: [encode_batch(tokenizer, examples[i: i + _BATCH])
                               for i in range(0, len(examples), _BATCH)]
                        for name, examples in self.sets.items()}

    def __call__(self, model) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            out = {}
            for name, examples in self.sets.items():
                out[f"{name}_loss"] = answer_loss(model, self.batches[name])
                out[f"{name}_acc"] = accuracy(model, self.tokenizer, examples, batch_size=64)
            return out
        finally:
            model.train(was_training)


class EncoderMeasure:
    """Cosine similarity of the fixed sentences' embeddings to the clean model's."""

    metrics = ("cosine", "cosine_min")

    def __init__(self, model, tokenizer):
        if tokenizer.pad_token is None:
            raise LiftError("the encoder's tokenizer has no pad token, so sentences cannot be batched")
        self.batch = dict(tokenizer(list(SENTENCES), padding=True, return_tensors="pt"))
        self.reference = self._embed(model)

    def _embed(self, model) -> torch.Tensor:
        model.eval()
        out = mean_pooled_embeddings(model, self.batch).double()
        return out / out.norm(dim=-1, keepdim=True).clamp(min=1e-30)

    def __call__(self, model) -> dict[str, float]:
        # fp64 unit vectors: the clean model's own cosine is 1 to within 1e-15, clamped to 1.
        cosine = (self._embed(model) * self.reference).sum(dim=-1).clamp(max=1.0)
        return {"cosine": float(cosine.mean()), "cosine_min": float(cosine.min())}


def make_measure(model, tokenizer, *, eval_limit: int | None = None):
    """The measure that fits ``model``: CausalMeasure for a causal LM, else EncoderMeasure."""
    config = getattr(model, "config", None)
    if config is not None and is_causal_lm(config):
        return CausalMeasure(model, tokenizer, eval_limit=eval_limit)
    return EncoderMeasure(model, tokenizer)
