"""Bounded tokenization: the ids kept equal those of the whole text, for several tokenizers."""

import random

import pytest
import torch

from lift_core.models.builtin import build_tokenizer
from lift_core.train.encoding import (
    encode_example,
    first_tokens,
    last_tokens,
    pad_for_generation,
    pad_for_training,
)
from lift_core.train.tasks import Example

WORDS = "the answer is seven plus three equals ten so we write it down twice".split()


def _bpe_tokenizer(collapse_whitespace=False):
    """A byte-level BPE trained here in milliseconds, <bos> added like Llama's."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from tokenizers import decoders, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if collapse_whitespace:  # like tokenizers that normalize runs of spaces away
        tok.normalizer = normalizers.Replace(Regex(r"\s+"), " ")
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(random.Random(i).choices(WORDS, k=30)) for i in range(200)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


@pytest.fixture(scope="module", params=["char", "bpe", "bpe_collapsing"])
def tokenizer(request):
    if request.param == "char":
        return build_tokenizer()
    return _bpe_tokenizer(collapse_whitespace=request.param == "bpe_collapsing")


def _texts():
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=n)) for n in (1, 5, 40, 400, 3000)]
    texts.append(" " * 20_000 + "seven plus three " * 50)  # a window of blanks yields few tokens
    texts.append("tenten" * 5000)  # one long word: no pre-token boundary near the cut
    return texts


@pytest.mark.parametrize("special", [False, True])
def test_first_tokens_equal_the_start_of_the_whole_tokenization(tokenizer, special):
    for text in _texts():
        whole = tokenizer(text, add_special_tokens=special, verbose=False)["input_ids"]
        for n in (1, 7, 64, 300):
            assert first_tokens(tokenizer, text, n, add_special_tokens=special) == whole[:n]
        assert first_tokens(tokenizer, text, None, add_special_tokens=special) == whole


def test_last_tokens_keep_the_leading_special_token_and_the_end(tokenizer):
    bos = tokenizer.bos_token_id
    for text in _texts():
        whole = tokenizer(text, verbose=False)["input_ids"]
        for n in (2, 9, 100):
            expected = whole if len(whole) <= n else [bos] + whole[len(whole) - n + 1:]
            assert last_tokens(tokenizer, text, n) == expected
        assert last_tokens(tokenizer, text) == whole


def test_a_huge_text_is_never_tokenized_whole():
    calls = []
    tok = build_tokenizer()

    def spy(text, **kwargs):
        calls.append(len(text))
        return tok(text, **kwargs)

    assert first_tokens(spy, "x" * 10_000_000, 512) == [tok.convert_tokens_to_ids("x")] * 512
    assert len(last_tokens(spy, "y" * 10_000_000, 512)) == 512
    assert max(calls) < 10_000


def test_encode_example_cuts_to_max_length_and_marks_the_prompt():
    tok = build_tokenizer()
    example = Example("Q: 12+3\nA: ", "12+3=15. #### 15")
    ids, prompt_tokens = encode_example(tok, example)
    assert prompt_tokens == 1 + len(example.prompt)  # <bos> + one token a character
    assert len(ids) == prompt_tokens + len(example.answer) + 1 and ids[-1] == tok.eos_token_id
    short, same_prompt = encode_example(tok, example, max_length=15)
    assert same_prompt == prompt_tokens and torch.equal(short, ids[:15])
    assert encode_example(tok, example, max_length=prompt_tokens) is None  # no answer token left
    assert encode_example(tok, Example("p" * 10**7, "a"), max_length=32) is None


def test_padding_for_training_and_generation():
    tok = build_tokenizer()
    encoded = [encode_example(tok, Example("ab", "c")), encode_example(tok, Example("a", "bcd"))]
    batch = pad_for_training(encoded, tok.pad_token_id)
    assert batch["input_ids"].shape == (2, 6)
    answer_and_eos = batch["input_ids"][0, 3:5].tolist()
    assert batch["labels"][0].tolist() == [-100, -100, -100] + answer_and_eos + [-100]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    prompts = ["ab", "abcd", ""]
    tok.padding_side = "left"
    reference = tok(prompts, padding=True, return_tensors="pt")
    ours = pad_for_generation([tok(p)["input_ids"] for p in prompts], tok.pad_token_id)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(ours[key], reference[key])
