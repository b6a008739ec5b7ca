"""Batched greedy generation and exact-match accuracy, on tiny random models."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lift_core.errors import LiftError
from lift_core.models.builtin import build_tokenizer
from lift_core.train.evaluation import accuracy, answer_length, generate_completions, score
from lift_core.train.tasks import Example


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _unbatched(model, tokenizer, prompt, max_new_tokens):
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = model(input_ids=ids).logits[0, -1].argmax()
            if nxt.item() == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return tokenizer.decode(ids[0], skip_special_tokens=True)[len(prompt):]


def test_batched_left_padded_generation_matches_one_at_a_time(tiny_model, tokenizer):
    prompts = ["rev abc = ", "12+3=", "Q: 7+5-3\nA: ", "a much longer prompt than the others: "]
    out = generate_completions(tiny_model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    assert len(out) == len(prompts)
    for prompt, completion in zip(prompts, out):
        assert completion == _unbatched(tiny_model, tokenizer, prompt, 6)


def test_generation_stops_at_eos(tiny_model, tokenizer):
    # A head that always prefers <eos>: every completion ends at once and is empty.
    head = torch.nn.Linear(tiny_model.config.hidden_size, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 1.0
    tiny_model.lm_head = head
    assert generate_completions(tiny_model, tokenizer, ["x", "yy"], max_new_tokens=5) == ["", ""]


def test_modes_and_padding_side_are_restored(tiny_model, tokenizer):
    tiny_model.train()
    generate_completions(tiny_model, tokenizer, ["ab"], max_new_tokens=2)
    assert tiny_model.training and tokenizer.padding_side == "right"
    tiny_model.eval()
    generate_completions(tiny_model, tokenizer, ["ab"], max_new_tokens=2)
    assert not tiny_model.training


def test_accuracy_scores_extracted_answers(tiny_model, tokenizer):
    examples = [Example("1+1=", "2"), Example("Q: 1+1+1\nA: ", "1+1=2, 2+1=3. #### 3")]
    assert score(["2", "so #### 3"], examples) == [True, True]
    assert score(["2.0", "#### 4"], examples) == [True, False]
    value = accuracy(tiny_model, tokenizer, examples, max_new_tokens=3)
    assert 0.0 <= value <= 1.0
    assert answer_length(tokenizer, examples, slack=0) == len("1+1=2, 2+1=3. #### 3")


def test_bad_arguments_raise_lift_error(tiny_model, tokenizer):
    with pytest.raises(LiftError):
        accuracy(tiny_model, tokenizer, [])
    with pytest.raises(LiftError):
        generate_completions(tiny_model, tokenizer, ["a"], max_new_tokens=0)


def test_tokenizer_without_pad_token_pads_with_eos(tiny_model):
    tok = build_tokenizer()
    reference = generate_completions(tiny_model, tok, ["ab", "abcd"], max_new_tokens=3)
    tok.pad_token = None
    assert tok.pad_token_id is None
    assert generate_completions(tiny_model, tok, ["ab", "abcd"], max_new_tokens=3) == reference
    assert tok.pad_token is None


def test_a_giant_prompt_keeps_its_last_tokens(tiny_model, tokenizer):
    tail = "z" * 200 + "Q: 7+5-3\nA: "
    giant = "y" * 5_000_000 + tail
    # <bos> + the last 19 characters (one token each) is what the model sees.
    [out] = generate_completions(tiny_model, tokenizer, [giant], max_new_tokens=4,
                                 max_prompt_tokens=20)
    assert out == _unbatched(tiny_model, tokenizer, giant[-19:], 4)
    # By default a prompt keeps what fits the context (128 positions) next to the answer.
    [out] = generate_completions(tiny_model, tokenizer, [giant], max_new_tokens=4)
    assert out == _unbatched(tiny_model, tokenizer, giant[-(128 - 4 - 1):], 4)


def test_answer_length_counts_a_giant_answer_only_up_to_the_cap(tokenizer):
    examples = [Example("p", "1" * 5_000_000), Example("p", "12")]
    assert answer_length(tokenizer, examples, slack=8, max_tokens=64) == 64 + 8
    assert answer_length(tokenizer, examples[1:], slack=0, max_tokens=64) == 2
