"""Tiny real models the tests train: built from configs, saved like downloaded ones."""

import torch


def save_char_llama(path, *, poison=False):
    """A random 2-block Llama with the built-in character tokenizer, saved like a real one.

    ``poison`` fills the embeddings with NaN, so the very first loss is NaN.
    """
    from transformers import LlamaForCausalLM

    from lift_core.models.builtin import BuiltinRecipe, build_config, build_tokenizer

    tokenizer = build_tokenizer()
    recipe = BuiltinRecipe(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48)
    torch.manual_seed(0)
    model = LlamaForCausalLM(build_config(recipe, tokenizer))
    if poison:
        model.model.embed_tokens.weight.data[:] = float("nan")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
