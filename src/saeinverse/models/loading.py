"""Load the subject model and the SAE, and check that they fit together.

Model names resolve through a small registry of sources: the embedded default (offline), a local
Hugging Face folder, or any TransformerLens model name (needs network or the HF cache). SAEs come
from the SAELens registry, a Hugging Face repo path, or a local SAELens folder. Every failure a
user can fix raises `ModelLoadError` or `CompatibilityError` naming what is needed.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saeinverse.errors import CompatibilityError, ConfigError, ModelLoadError, one_line
from saeinverse.hub import hub_mode, hub_should_be_offline
from saeinverse.models import default as default_model
from saeinverse.models.hooks import hook_width
from saeinverse.models.paths import gguf_path, models_dir, saes_dir
from saeinverse.models.weights import load_unprocessed

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

SAE_FILES = ("cfg.json", "sae_weights.safetensors")
"""The files of a SAELens SAE folder (written by `SAE.save_model`)."""

EMBEDDED_ALIASES = default_model.EMBEDDED_ALIASES
"""The names of the embedded default (defined once, in `models.default`; see `is_embedded`)."""

_NEEDS_HUB = (
    "it needs network access to the Hugging Face Hub (or a copy already in the HF cache). "
    "Connect to the network, or pass a local directory instead"
)
_OFFLINE_HINT = (
    f"{_NEEDS_HUB}; the embedded default '{default_model.DEFAULT_MODEL_NAME}' works offline."
)
_SAE_OFFLINE_HINT = f"{_NEEDS_HUB}; `saeinverse train-sae` trains one offline."


def _hub_failure(what: str, offline: bool, exc: BaseException, hint: str) -> ModelLoadError:
    """The error for a failed hub load: what to do when offline, the hub's reason otherwise."""
    if offline:
        return ModelLoadError(f"Cannot load {what} (offline): {hint}")
    return ModelLoadError(
        f"Cannot load {what} from the Hugging Face Hub: {type(exc).__name__}: {exc}"
    )


# --- devices ------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` if available else `cpu`; a requested but missing CUDA device is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.") from exc
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelLoadError(
                f"Device {device!r} was requested but CUDA is not available on this machine "
                "(use device 'auto' or 'cpu')."
            )
        if parsed.index is not None and parsed.index >= count:
            raise ModelLoadError(
                f"Device {device!r} does not exist: this machine has {count} GPU(s)."
            )
    return device


# --- subject models -----------------------------------------------------------------------------

ModelSource = Callable[[str, str, str, "int | None"], "HookedTransformer"]


def _load_embedded(name: str, device: str, dtype: str, n_ctx: int | None) -> HookedTransformer:
    """The embedded default SmolLM2-135M-Instruct (works offline)."""
    return default_model.load_default_model(device=device, dtype=dtype, n_ctx=n_ctx)


def _load_local_dir(name: str, device: str, dtype: str, n_ctx: int | None) -> HookedTransformer:
    """A local Hugging Face model folder (config.json + weights + tokenizer), no processing."""
    import torch
    import transformer_lens.loading_from_pretrained as tl_loading
    from transformer_lens import HookedTransformer
    from transformers import AutoTokenizer

    folder = str(Path(name).resolve())
    with hub_mode(offline=True):
        try:
            cfg = tl_loading.get_pretrained_model_config(
                folder, device=device, dtype=getattr(torch, dtype), n_ctx=n_ctx
            )
            state_dict = tl_loading.get_pretrained_state_dict(folder, cfg, dtype=cfg.dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = HookedTransformer(cfg, tokenizer, move_to_device=False)
        except (OSError, ValueError, KeyError, NotImplementedError) as exc:
            raise ModelLoadError(
                f"Could not load a model from the local folder {folder}: {exc}. It must be a "
                "Hugging Face model folder (config.json, weights, tokenizer) of an architecture "
                "TransformerLens supports."
            ) from exc
    load_unprocessed(model, state_dict)
    return model.to(device, print_details=False)


def _load_transformer_lens(
    name: str, device: str, dtype: str, n_ctx: int | None
) -> HookedTransformer:
    """A TransformerLens model name, downloaded from the hub (or read from the HF cache)."""
    from transformer_lens import HookedTransformer

    offline = hub_should_be_offline()
    with hub_mode(offline=offline):
        try:
            return HookedTransformer.from_pretrained_no_processing(
                name, device=device, dtype=dtype, n_ctx=n_ctx
            )
        except ValueError as exc:
            if "not found" not in str(exc):
                raise
            raise ModelLoadError(
                f"Model {name!r} is neither a TransformerLens model name nor a local directory "
                "(see transformer_lens.loading.OFFICIAL_MODEL_NAMES; the embedded default is "
                f"'{default_model.DEFAULT_MODEL_NAME}')."
            ) from exc
        except (OSError, ConnectionError) as exc:
            raise _hub_failure(f"model {name!r}", offline, exc, _OFFLINE_HINT) from exc


def _load_tiny(name: str, device: str, dtype: str, n_ctx: int | None) -> HookedTransformer:
    """The tiny random model of `saeinverse.models.tiny` (tests, examples, smoke runs)."""
    import torch

    from saeinverse.models.tiny import tiny_model

    overrides: dict[str, Any] = {"device": device, "dtype": getattr(torch, dtype)}
    if n_ctx is not None:
        overrides["n_ctx"] = min(int(n_ctx), 512)
    return tiny_model(**overrides)


MODEL_SOURCES: dict[str, ModelSource] = {
    "embedded": _load_embedded,
    "tiny": _load_tiny,
    "local": _load_local_dir,
    "transformer_lens": _load_transformer_lens,
}
"""How each kind of model name is loaded; `model_source` picks the entry for a name."""


def model_source(name: str) -> str:
    """Which entry of `MODEL_SOURCES` loads `name`."""
    if default_model.is_embedded(name):
        return "embedded"
    if name == "tiny-char":
        return "tiny"
    if Path(name).expanduser().is_dir():
        return "local"
    return "transformer_lens"


def load_model(
    name: str, device: str = "cpu", dtype: str = "float32", n_ctx: int | None = None
) -> HookedTransformer:
    """Load a subject model as an eval-mode `HookedTransformer` without weight processing.

    `name`: `smollm2-135m` (embedded default, offline), a local HF model folder, or any
    TransformerLens model name (needs network or the HF cache; fails in seconds without).
    """
    device = resolve_device(device)
    source = model_source(name)
    logger.info("Loading model %r (%s) on %s.", name, source, device)
    loader = MODEL_SOURCES[source]
    path_or_name = str(Path(name).expanduser()) if source == "local" else name
    from saeinverse.models.layout import fast_layout

    return fast_layout(loader(path_or_name, device, dtype, n_ctx).eval())


# --- SAEs ---------------------------------------------------------------------------------------

_HF_REPO_PATH = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w./-]+)?$")


def _missing_sae_files(folder: Path) -> list[str]:
    return [name for name in SAE_FILES if not (folder / name).is_file()]


def _load_sae_dir(folder: Path, device: str, dtype: str | None) -> SAE:
    """A local SAELens folder (cfg.json + sae_weights.safetensors)."""
    from sae_lens import SAE

    expected = " + ".join(SAE_FILES)
    if not folder.is_dir():
        raise ModelLoadError(f"SAE directory {folder} does not exist (expected {expected}).")
    missing = _missing_sae_files(folder)
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:10]
        raise ModelLoadError(
            f"SAE directory {folder} is missing {', '.join(missing)}: expected {expected} "
            f"(as written by SAE.save_model); found {present or 'nothing'}."
        )
    try:
        return SAE.load_from_disk(folder, device=device, dtype=dtype)
    except Exception as exc:  # corrupt JSON, truncated safetensors, unknown architecture...
        raise ModelLoadError(
            f"Could not read the SAE in {folder} (expected {expected}): "
            f"{type(exc).__name__}: {one_line(exc)}"
        ) from exc


def _load_sae_hub_path(path: str, device: str, dtype: str | None) -> SAE:
    """A Hugging Face repo path `org/repo[/subfolder]` holding a SAELens SAE folder."""
    from huggingface_hub import hf_hub_download

    parts = path.split("/")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    offline = hub_should_be_offline()
    with hub_mode(offline=offline):
        try:
            files = [
                hf_hub_download(repo_id, name, subfolder=subfolder or None) for name in SAE_FILES
            ]
        except Exception as exc:
            what = f"SAE {path!r} (no local directory has that path; as a hub repo path)"
            raise _hub_failure(what, offline, exc, _SAE_OFFLINE_HINT) from exc
    return _load_sae_dir(Path(files[0]).parent, device, dtype)


def _load_sae_release(release: str, sae_id: str | None, device: str, dtype: str) -> SAE:
    """A SAELens registry release + sae_id (or `org/repo` + subfolder)."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        if "/" in release:
            return _load_sae_hub_path(f"{release}/{sae_id}" if sae_id else release, device, dtype)
        close = difflib.get_close_matches(release, list(directory), n=3)
        raise ModelLoadError(
            f"SAE release {release!r} is not in SAELens's registry (closest: {close}) nor an "
            "org/repo path on the hub; pass a local SAE folder as `path` instead."
        )
    if sae_id is None:
        ids = list(directory[release].saes_map)
        raise ModelLoadError(f"SAE release {release!r} needs an sae_id, e.g. one of {ids[:5]}.")
    offline = hub_should_be_offline()
    with hub_mode(offline=offline):
        try:
            return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)
        except ValueError as exc:  # unknown sae_id: SAELens names the valid ones
            raise ModelLoadError(f"Cannot load SAE {release!r} / {sae_id!r}: {exc}") from exc
        except (OSError, ConnectionError) as exc:
            what = f"SAE release {release!r} / {sae_id!r}"
            raise _hub_failure(what, offline, exc, _SAE_OFFLINE_HINT) from exc


def load_sae(
    release: str | None = None,
    sae_id: str | None = None,
    path: str | Path | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> SAE:
    """Load an SAE, frozen (`requires_grad_(False)`) and in eval mode.

    Give either `release` (+ `sae_id`): a SAELens registry release or an `org/repo` on the hub;
    or `path`: a local SAELens folder, else a hub repo path `org/repo[/subfolder]`.
    `dtype` None keeps the saved dtype for local folders and means float32 for the hub.
    """
    if (release is None) == (path is None):
        raise ConfigError("load_sae needs exactly one of `release` (+ `sae_id`) or `path`.")
    device = resolve_device(device)
    if release is not None:
        sae = _load_sae_release(release, sae_id, device, dtype or "float32")
    else:
        local = Path(path).expanduser()
        text = str(path)
        looks_remote = _HF_REPO_PATH.match(text) and not text.startswith(".")
        if local.exists() or not looks_remote:
            sae = _load_sae_dir(local, device, dtype)
        else:
            sae = _load_sae_hub_path(text, device, dtype)
    sae.requires_grad_(False)
    return sae.eval()


# --- compatibility ------------------------------------------------------------------------------


def _hook_summary(model: HookedTransformer, hook_name: str) -> str:
    """A short description of the model's valid hooks, with the nearest names to `hook_name`."""
    last = model.cfg.n_layers - 1
    close = difflib.get_close_matches(hook_name, list(model.hook_dict), n=3, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return f"valid hooks look like blocks.0..{last}.hook_resid_post, blocks.N.hook_mlp_out{hint}"


def check_compatible(model: HookedTransformer, sae: SAE) -> None:
    """Raise CompatibilityError unless the SAE's hook exists in the model with width `d_in`."""
    hook_name = sae.cfg.metadata.hook_name
    model_name = model.cfg.model_name
    if not hook_name:
        raise CompatibilityError("The SAE records no hook name (sae.cfg.metadata.hook_name).")
    if hook_name not in model.hook_dict:
        raise CompatibilityError(
            f"SAE hook {hook_name!r} is not in model {model_name!r} "
            f"({model.cfg.n_layers} layers): {_hook_summary(model, hook_name)}."
        )
    width = hook_width(model, hook_name)
    if width != sae.cfg.d_in:
        raise CompatibilityError(
            f"SAE hook {hook_name!r} (d_in={sae.cfg.d_in}) does not match model {model_name!r}: "
            f"that hook's width is {width}."
        )
    sae_model = sae.cfg.metadata.model_name
    if sae_model and sae_model != model_name:
        logger.warning("The SAE was trained on %r, the model is %r.", sae_model, model_name)


# --- what is available offline ------------------------------------------------------------------


def _embedded_entry() -> dict[str, Any]:
    try:
        source = str(gguf_path())
    except ModelLoadError:
        source = None
    cache = default_model.fp32_cache_dir()
    cached = default_model.is_cached()
    return {
        "kind": "model",
        "name": default_model.DEFAULT_MODEL_NAME,
        "source": "embedded",
        "available": source is not None or cached,
        "cached": cached,
        "path": str(cache) if cached else source,
    }


def _sae_entry(cfg_file: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        cfg = {}
    metadata = cfg.get("metadata") or {}
    return {
        "kind": "sae",
        "name": str(cfg_file.parent.relative_to(saes_dir())),
        "source": "local",
        "available": not _missing_sae_files(cfg_file.parent),
        "path": str(cfg_file.parent),
        "architecture": cfg.get("architecture"),
        "hook_name": metadata.get("hook_name"),
        "model_name": metadata.get("model_name"),
        "d_in": cfg.get("d_in"),
        "d_sae": cfg.get("d_sae"),
        "k": cfg.get("k"),
    }


def available_models() -> list[dict[str, Any]]:
    """What can be loaded offline: the embedded default, cached model folders, cached SAEs."""
    entries = [_embedded_entry()]
    default_cache = default_model.fp32_cache_dir()
    if models_dir().is_dir():
        for folder in sorted(models_dir().iterdir()):
            if folder != default_cache and (folder / "config.json").is_file():
                entry = {"kind": "model", "name": folder.name, "source": "local"}
                entries.append({**entry, "available": True, "path": str(folder)})
    if saes_dir().is_dir():
        entries.extend(_sae_entry(cfg) for cfg in sorted(saes_dir().rglob("cfg.json")))
    return entries
