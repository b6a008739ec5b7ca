"""The built-in tiny Llama: its character tokenizer, its pretraining recipe, its shipped files.

LIFT Studio ships a 0.83M-parameter Llama (``lift_core/builtin/``) pretrained here, by the
deterministic recipe below, on the source domain of :mod:`lift_core.train.tasks`. It knows that
domain (>= 90% held-out accuracy) and not the target task, so fine-tuning it shows both
learning and forgetting in about a minute on a CPU. The directory is a standard Hugging Face
one (config.json, model.safetensors, tokenizer files) and loads offline with the ``Auto*``
classes; :func:`ensure_builtin_model` rebuilds it into a user cache only if it is damaged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import string
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lift_core.errors import LiftError
from lift_core.train.encoding import encode_batch
from lift_core.train.tasks import source_train_examples

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "builtin"  # lift_core/builtin/
CHECKSUM_FILE = "weights.sha256"
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
# Every printable ASCII character plus newline: enough for the built-in tasks and for
# English/maths user data (anything else becomes <unk>).
CHARACTERS = "\n" + "".join(c for c in string.printable if c.isprintable())

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)


@dataclass
class BuiltinRecipe:
    """How the built-in model is shaped and pretrained (the defaults made the shipped one)."""

    hidden_size: int = 128  # model width
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads (no grouped-query attention)
    intermediate_size: int = 352  # MLP width, ~2.75x hidden
    max_positions: int = 256  # longest sequence (prompt + answer) the model supports
    steps: int = 1000  # optimizer steps of pretraining
    batch_size: int = 48  # examples per step
    lr: float = 3e-3  # AdamW peak learning rate (linear warmup, cosine decay)
    warmup_steps: int = 100  # linear warmup steps
    weight_decay: float = 0.01  # AdamW weight decay
    num_threads: int = 2  # torch CPU threads while building

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise LiftError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_heads ({self.num_heads})"
            )
        for name in ("hidden_size", "num_layers", "intermediate_size", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise LiftError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise LiftError(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")


# --- tokenizer ---------------------------------------------------------------------------


def build_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: one token per character, <bos> first."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Isolate every character (newline included); Fuse joins them back without spaces.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", padding_side="right", model_max_length=BuiltinRecipe.max_positions,
    )


def build_config(recipe: BuiltinRecipe, tokenizer):
    """The ``LlamaConfig`` of the built-in model."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size, num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads, num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_positions, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, architectures=["LlamaForCausalLM"],
    )


# --- the recipe --------------------------------------------------------------------------


def _lr_at(step: int, recipe: BuiltinRecipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    done = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * done))


def pretrain(model, tokenizer, recipe: BuiltinRecipe, seed: int, progress: Progress | None):
    """Train ``model`` on fresh source-domain batches (in place); returns the last loss."""
    data = source_train_examples(recipe.steps * recipe.batch_size, seed=seed)
    optim = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay
    )
    model.train()
    loss_value = float("nan")
    for step in range(recipe.steps):
        for group in optim.param_groups:
            group["lr"] = _lr_at(step, recipe)
        chunk = data[step * recipe.batch_size: (step + 1) * recipe.batch_size]
        loss = model(**encode_batch(tokenizer, chunk)).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        loss_value = loss.item()
        if progress is not None and (step % 25 == 0 or step == recipe.steps - 1):
            message = f"pretraining step {step + 1}/{recipe.steps}, loss {loss_value:.3f}"
            progress((step + 1) / recipe.steps, message)
    model.eval()
    return loss_value


def build_builtin_model(
    out_dir: str | Path,
    progress: Progress | None = None,
    seed: int = 0,
    recipe: BuiltinRecipe | None = None,
) -> Path:
    """Build the built-in model from scratch and save it as a Hugging Face directory.

    Args:
        out_dir: where to write config.json, model.safetensors and the tokenizer files.
        progress: called as ``progress(fraction, message)`` while training.
        seed: seeds initialisation and the training data.
        recipe: shape and training schedule (the defaults made the shipped model).

    Returns:
        ``out_dir`` as a Path.
    """
    from transformers import GenerationConfig, LlamaForCausalLM

    recipe = recipe or BuiltinRecipe()
    out = Path(out_dir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.num_threads)
    try:
        torch.manual_seed(seed)
        random.seed(seed)
        tokenizer = build_tokenizer()
        model = LlamaForCausalLM(build_config(recipe, tokenizer))
        start = time.perf_counter()
        loss = pretrain(model, tokenizer, recipe, seed, progress)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, do_sample=False,
        )
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        _write_checksum(out)
    finally:
        torch.set_num_threads(previous_threads)
    if progress is not None:
        progress(1.0, f"built in {time.perf_counter() - start:.0f} s (final loss {loss:.3f})")
    return out


# --- the shipped directory and its fallback ----------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_checksum(directory: Path) -> None:
    digest = _sha256(directory / "model.safetensors")
    (directory / CHECKSUM_FILE).write_text(f"{digest}  model.safetensors\n")


def builtin_dir_problem(directory: Path) -> str | None:
    """Why ``directory`` is not a usable built-in model, or None when it is."""
    weights = directory / "model.safetensors"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", CHECKSUM_FILE):
        if not (directory / name).is_file():
            return f"{name} is missing"
    if not weights.is_file():
        return "model.safetensors is missing"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        try:
            json.loads((directory / name).read_text())
        except (OSError, ValueError):
            return f"{name} is not valid JSON"
    expected = (directory / CHECKSUM_FILE).read_text().split()[:1]
    # A git-lfs pointer or a truncated download fails here, not later inside transformers.
    if expected != [_sha256(weights)]:
        return "model.safetensors does not match its checksum"
    return None


def cache_dir() -> Path:
    """Where a rebuilt built-in model lives: $LIFT_STUDIO_CACHE or ~/.cache/lift_studio."""
    root = os.environ.get("LIFT_STUDIO_CACHE") or Path.home() / ".cache" / "lift_studio"
    return Path(root).expanduser() / "builtin"


def ensure_builtin_model(progress: Progress | None = None) -> Path:
    """The directory of the built-in model, rebuilding it only if the shipped copy is broken.

    Returns the shipped ``lift_core/builtin`` when it is intact; else a previously rebuilt
    copy in :func:`cache_dir`; else rebuilds there (a few minutes on a CPU), reporting
    through ``progress(fraction, message)``.
    """
    if builtin_dir_problem(SHIPPED_DIR) is None:
        return SHIPPED_DIR
    cached = cache_dir()
    if builtin_dir_problem(cached) is None:
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with _rebuild_lock(cached.parent / "builtin.lock"):
            # Another process may have rebuilt it while we waited for the lock.
            if builtin_dir_problem(cached) is not None:
                _rebuild(cached, builtin_dir_problem(SHIPPED_DIR), progress)
    except OSError as exc:
        raise LiftError(f"could not rebuild the built-in model in {cached}: {exc}") from exc
    return cached


@contextmanager
def _rebuild_lock(path: Path):
    """An exclusive lock file, so parallel processes (app, tests, CLI) rebuild only once."""
    with open(path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock, at worst a double rebuild
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _rebuild(target: Path, reason: str | None, progress: Progress | None) -> None:
    if progress is not None:
        progress(0.0, f"the shipped built-in model is unusable ({reason}); rebuilding it")
    tmp = target.with_name(f"builtin.tmp{os.getpid()}")
    build_builtin_model(tmp, progress=progress)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
