"""Greedy-generation exact-match accuracy for any causal LM.

Prompts are generated in batches with left padding (so every row's next token sits in the
last column), greedily, until <eos> or ``max_new_tokens``. A completion is scored by
comparing :func:`lift_core.train.tasks.extract_answer` of it with that of the gold answer, so
the built-in tasks ("#### 9") and MATH-10K style data ("The answer is 9") score alike.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from lift_core.errors import LiftError
from lift_core.train.encoding import first_tokens, last_tokens, pad_for_generation
from lift_core.train.tasks import Example, extract_answer


@contextmanager
def _eval_mode(model, tokenizer):
    """Eval mode, left padding and a pad token for the duration; restores all three."""
    was_training = model.training
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    model.eval()
    tokenizer.padding_side = "left"
    if pad is None:  # GPT-2 style tokenizers: pad with eos, masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None
        model.train(was_training)


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def generate_completions(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    max_prompt_tokens: int | None = None,
) -> list[str]:
    """Greedy completions of ``prompts`` (the new text only, special tokens removed).

    Args:
        model: a transformers causal LM (the built-in model or a real one).
        tokenizer: its tokenizer; needs a pad or eos token.
        prompts: the texts to continue.
        max_new_tokens: the longest completion.
        batch_size: prompts per ``generate`` call.
        device: where to run; defaults to the model's device (the model is not moved).
        max_prompt_tokens: a longer prompt keeps only its last this many tokens (special
            tokens included), so a giant prompt costs no more than this; None: the model's
            context length less ``max_new_tokens`` (no limit when its config gives none).

    Returns:
        One completion per prompt, in order.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise LiftError(
            f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}"
        )
    if tokenizer.eos_token_id is None:
        raise LiftError("the tokenizer has no end-of-sequence token, so generation cannot stop")
    device = torch.device(device) if device is not None else _model_device(model)
    if max_prompt_tokens is None:
        max_prompt_tokens = _context_left(model, max_new_tokens)
    completions: list[str] = []
    with _eval_mode(model, tokenizer):
        for start in range(0, len(prompts), batch_size):
            ids = [last_tokens(tokenizer, p, max_prompt_tokens)
                   for p in prompts[start: start + batch_size]]
            batch = pad_for_generation(ids, tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                temperature=None, top_p=None, top_k=None,
            )
            new_tokens = out[:, batch["input_ids"].shape[1]:]
            completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return completions


def _context_left(model, max_new_tokens: int) -> int | None:
    """Prompt tokens that fit the model's context next to the completion (None: unknown)."""
    config = getattr(model, "config", None)
    context = (getattr(config, "max_position_embeddings", None)
               or getattr(config, "n_positions", None))
    return max(1, context - max_new_tokens) if isinstance(context, int) else None


def answer_length(tokenizer, examples: list[Example], *, slack: int = 8,
                  max_tokens: int | None = None) -> int:
    """A ``max_new_tokens`` that fits the longest gold answer plus some slack.

    Args:
        max_tokens: count an answer's tokens only up to this many (None: all), so a giant
            answer is not tokenized whole.
    """
    lengths = [len(first_tokens(tokenizer, e.answer, max_tokens)) for e in examples]
    return max(lengths, default=0) + slack


def score(completions: list[str], examples: list[Example]) -> list[bool]:
    """Per example: does the extracted answer of the completion equal the gold one?"""
    return [extract_answer(c) == extract_answer(e.answer) for c, e in zip(completions, examples)]


def accuracy(
    model,
    tokenizer,
    examples: list[Example],
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    max_prompt_tokens: int | None = None,
) -> float:
    """Exact-match accuracy (0..1) of greedy generations on ``examples``.

    Args:
        max_new_tokens: defaults to the longest gold answer plus 8 tokens (counted up to
            ``max_prompt_tokens`` when it is given).
        batch_size, device, max_prompt_tokens: as in :func:`generate_completions`.
    """
    if not examples:
        raise LiftError("no examples to evaluate")
    if max_new_tokens is None:
        max_new_tokens = answer_length(tokenizer, examples, max_tokens=max_prompt_tokens)
    completions = generate_completions(
        model, tokenizer, [e.prompt for e in examples], max_new_tokens=max_new_tokens,
        batch_size=batch_size, device=device, max_prompt_tokens=max_prompt_tokens,
    )
    hits = score(completions, examples)
    return sum(hits) / len(hits)
