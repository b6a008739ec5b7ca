"""Token ids of bounded length for training and generation, however long the text.

A fast tokenizer holds a few hundred bytes per character while it works (offsets,
alignments, pre-token splits): tokenizing a 50 MB field costs tens of GB even when only
512 tokens are wanted. So text goes to the tokenizer through a window of characters sized
from the token budget, widened only while it yields too few tokens (text that a tokenizer
packs densely or normalizes away). Cutting text can change the tokens next to the cut, so
the window must yield ``_MARGIN`` tokens beyond those kept; the ids kept then equal those
of tokenizing the whole text (exactly so for the built-in character tokenizer).
"""

from __future__ import annotations

import torch

from lift_core.errors import LiftError
from lift_core.train.tasks import Example

_MARGIN = 16  # tokens beyond the budget: a cut word changes only tokens next to the cut
_CHARS_PER_TOKEN = 8  # first window; English BPE averages ~4 characters a token, ours 1
_GROWTH = 4  # window growth while it yields too few tokens


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    # verbose=False: the "longer than the model's maximum" warning is moot, we cut.
    return tokenizer(text, add_special_tokens=special, verbose=False)["input_ids"]


def first_tokens(tokenizer, text: str, max_tokens: int | None = None, *,
                 add_special_tokens: bool = False) -> list[int]:
    """The first ``max_tokens`` ids of ``text`` (all of them when None).

    Args:
        add_special_tokens: as the tokenizer's own flag (e.g. a leading <bos>); the
            special tokens count towards ``max_tokens``.
    """
    if max_tokens is None:
        return _ids(tokenizer, text, add_special_tokens)
    window = _CHARS_PER_TOKEN * (max_tokens + _MARGIN)
    while True:
        ids = _ids(tokenizer, text[:window], add_special_tokens)
        if window >= len(text) or len(ids) >= max_tokens + _MARGIN:
            return ids[:max_tokens]
        window *= _GROWTH


def last_tokens(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """Ids of ``text`` with the tokenizer's special tokens, keeping the last ``max_tokens``.

    A prompt cut this way keeps its end, where a model continues from, and its special
    tokens (a leading <bos>); those count towards ``max_tokens``.
    """
    window = len(text) if max_tokens is None else _CHARS_PER_TOKEN * (max_tokens + _MARGIN)
    while True:
        piece = text[-window:] if window < len(text) else text
        full = _ids(tokenizer, piece, True)
        if max_tokens is None or len(full) <= max_tokens and piece is text:
            return full
        plain = _ids(tokenizer, piece, False)
        extra = len(full) - len(plain)  # special tokens around the text
        keep = max(1, max_tokens - extra)
        if piece is text or len(plain) >= keep + _MARGIN:
            return _keep_specials(full, plain, keep, max_tokens)
        window *= _GROWTH


def _keep_specials(full: list[int], plain: list[int], keep: int, max_tokens: int) -> list[int]:
    """``full`` (plain text wrapped in special tokens) with the text cut to its last ``keep``."""
    for before in range(len(full) - len(plain) + 1):
        if full[before: before + len(plain)] == plain:
            return full[:before] + plain[max(0, len(plain) - keep):] + full[before + len(plain):]
    return full[max(0, len(full) - max_tokens):]  # specials that do not simply wrap the text


def eos_and_pad_ids(tokenizer) -> tuple[int, int]:
    """The tokenizer's <eos> id and its pad id (<eos> when it has no pad token)."""
    if tokenizer.eos_token_id is None:
        raise LiftError("the tokenizer has no end-of-sequence token, so answers cannot end")
    pad = tokenizer.pad_token_id
    return tokenizer.eos_token_id, tokenizer.eos_token_id if pad is None else pad


def encode_example(tokenizer, example: Example,
                   max_length: int | None = None) -> tuple[torch.Tensor, int] | None:
    """``[<bos>] prompt answer <eos>`` cut to ``max_length`` tokens, and the prompt's length.

    <bos> comes when the tokenizer adds one. Only the tokens that can be kept are computed,
    so a huge record costs no more than a ``max_length`` one.

    Returns:
        ``(ids, prompt_tokens)`` as a 1-D long tensor and an int; None when the prompt
        alone fills ``max_length``, leaving no answer token to learn from.
    """
    eos, _ = eos_and_pad_ids(tokenizer)
    prompt = first_tokens(tokenizer, example.prompt, max_length, add_special_tokens=True)
    room = None if max_length is None else max_length - len(prompt)
    if room is not None and room < 1:
        return None
    answer = first_tokens(tokenizer, example.answer, room)
    sequence = (prompt + answer + [eos])[:max_length]
    return torch.tensor(sequence, dtype=torch.long), len(prompt)


def pad_for_training(encoded: list[tuple[torch.Tensor, int]], pad_id: int) -> dict:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` of encoded examples.

    Labels are -100 (no loss) on the prompt and the padding, so only the answer and
    <eos> are learned.
    """
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (sequence, prompt_tokens) in enumerate(encoded):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
        labels[row, prompt_tokens: len(sequence)] = sequence[prompt_tokens:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_for_generation(sequences: list[list[int]], pad_id: int) -> dict:
    """Left-padded ``input_ids``/``attention_mask``, so every row ends in the last column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence):] = torch.tensor(sequence, dtype=torch.long)
            mask[row, width - len(sequence):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def encode_batch(tokenizer, examples: list[Example]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` for teacher forcing.

    Each sequence is [<bos>] prompt answer <eos> (<bos> when the tokenizer adds one);
    only the answer and <eos> carry a loss (labels are -100 on the prompt and the
    padding). Works for any HF tokenizer with an eos token; pads with eos if it has no pad.
    Nothing is cut: training on user data encodes each example with
    :func:`encode_example` and its ``max_length`` instead.
    """
    _, pad_id = eos_and_pad_ids(tokenizer)
    return pad_for_training([encode_example(tokenizer, e) for e in examples], pad_id)
