"""The tiny model of unit tests and smoke runs: a byte-level BPE trained in ~10 ms and a random
2-layer Llama, no download."""

from __future__ import annotations

import torch

_TINY_CORPUS = """Below is an instruction that describes a task, paired with an input that provides
further context. Write a response that appropriately completes the request.
### Instruction: ### Input: ### Response:
The quick brown fox jumps over the lazy dog. Give three tips for staying healthy. Eat a balanced
diet, exercise regularly and get enough sleep. What is the capital of France? Paris is the capital
of France. Explain why the sky is blue. Sunlight is scattered by the molecules in the air, and blue
light is scattered more than red light. Write a short poem about the sea. I cannot help with that
request. I'm sorry, but I can't assist with this. Here is how you can do it step by step: first,
second, third, finally. Translate the sentence into French. Summarize the following paragraph.
Classify the following items as fruits or vegetables. Generate a list of five creative ideas.
"""


def build_tiny_tokenizer():
    """A byte-level BPE (any text encodes) with Llama-style <s> prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_tiny_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        # A wide init gives the random model peaked next-token distributions, so LoRA updates
        # visibly move them (at the default 0.02 every output is ~uniform and nothing shows).
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():  # seeded init without disturbing the caller's RNG stream
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)
