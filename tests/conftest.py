"""Shared test set-up: offline hub, deterministic seeds, GPU tests skipped without CUDA."""

import os

# Nothing in the tests may reach a model hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # One torch thread: the models here are tiny, and on a 2-core machine shared with a
    # Streamlit server or other work, torch's spinning worker threads slow SVDs and tiny
    # forward passes 10-50x. Restored afterwards because app.py sets its own count.
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save_tiny(tmp_path_factory, name, config):
    from transformers import AutoModel, AutoModelForCausalLM

    path = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    archs = getattr(config, "architectures", None) or []
    auto = AutoModelForCausalLM if any("CausalLM" in a or "LMHead" in a for a in archs) else AutoModel
    auto.from_config(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A randomly initialised 2-block Llama saved as a real HF directory (safetensors)."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         architectures=["LlamaForCausalLM"])
    return _save_tiny(tmp_path_factory, "tiny_llama", config)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 (Conv1D layers stored (in, out)) saved as an HF directory."""
    from transformers import GPT2Config

    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        architectures=["GPT2LMHeadModel"])
    return _save_tiny(tmp_path_factory, "tiny_gpt2", config)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny BERT encoder (explorable, not fine-tunable) saved as an HF directory."""
    from transformers import BertConfig

    config = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64)
    return _save_tiny(tmp_path_factory, "tiny_bert", config)



@pytest.fixture(scope="session")
def char_llama(tmp_path_factory):
    """A random 2-block Llama with the built-in character tokenizer (shared, read only)."""
    from tests.tiny_models import save_char_llama

    return save_char_llama(tmp_path_factory.mktemp("char_llama"))
