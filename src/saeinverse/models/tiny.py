"""Tiny random models and SAEs: the same code paths as the default model, in milliseconds.

For tests, examples and smoke runs: `load_model("tiny-char")` builds the model, and the default
SAE trainer works on it (set `sae.train.hook_name` to one of its hooks, e.g.
`blocks.0.hook_resid_post`, and a small `sae.train.d_sae`).

`tiny_model()` is a random 2-layer `HookedTransformer` with a character-level tokenizer built in
code (no files, no network), so `model.to_tokens(["hello world"])` works. Its start token is
`<|endoftext|>` (id 0), as for the embedded default; padding uses a distinct `<pad>` (id 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

TINY_MODEL_NAME = "tiny-char"
START_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (START_TOKEN, "<pad>", "<unk>")
CHARACTERS = ("\n", "\t", *(chr(code) for code in range(32, 127)))
TINY_VOCAB = len(SPECIAL_TOKENS) + len(CHARACTERS)
"""100: 3 special tokens, newline, tab and the 95 printable ASCII characters."""


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer that prepends `<|endoftext|>` (id 0); unknown chars -> `<unk>`."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{START_TOKEN} $A",
        pair=f"{START_TOKEN} $A {START_TOKEN} $B",
        special_tokens=[(START_TOKEN, 0)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=START_TOKEN,
        eos_token=START_TOKEN,
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )
    # TransformerLens reads this; with add_bos_token set it keeps the tokenizer as it is.
    tokenizer.init_kwargs["name_or_path"] = TINY_MODEL_NAME
    return tokenizer


def tiny_model_config(**overrides: Any) -> HookedTransformerConfig:
    """The tiny model's config: 2 layers, d_model 32, 4 heads of 8, d_mlp 64, vocab 100, n_ctx 64."""
    from transformer_lens import HookedTransformerConfig

    fields: dict[str, Any] = dict(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=TINY_VOCAB,
        n_ctx=64,
        act_fn="gelu",
        normalization_type="LN",
        model_name=TINY_MODEL_NAME,
        device="cpu",
        seed=0,
    )
    fields.update(overrides)
    return HookedTransformerConfig(**fields)


def tiny_model(**overrides: Any) -> HookedTransformer:
    """A random tiny `HookedTransformer` with the character tokenizer, in eval mode."""
    from transformer_lens import HookedTransformer

    model = HookedTransformer(
        tiny_model_config(**overrides), tokenizer=char_tokenizer(), move_to_device=False
    )
    return model.eval()


def tiny_sae(
    hook_name: str = "blocks.0.hook_resid_post",
    d_in: int = 32,
    d_sae: int = 64,
    k: int | None = None,
    seed: int = 0,
    model_name: str = TINY_MODEL_NAME,
    architecture: str | None = None,
) -> SAE:
    """A random SAELens SAE, frozen, in eval mode.

    ``architecture``: 'standard' (the default), 'topk' (the default when ``k`` is given),
    'jumprelu' (random thresholds in [0, 0.2)) or 'gated'. A ``hook_z`` hook name gets an SAE
    that reshapes the heads itself. Weights come from a forked RNG seeded with ``seed``, so the
    global RNG is untouched.
    """
    import torch
    from sae_lens import saes

    architecture = architecture or ("topk" if k is not None else "standard")
    classes = {
        "standard": (saes.StandardSAEConfig, saes.StandardSAE),
        "topk": (saes.TopKSAEConfig, saes.TopKSAE),
        "jumprelu": (saes.JumpReLUSAEConfig, saes.JumpReLUSAE),
        "gated": (saes.GatedSAEConfig, saes.GatedSAE),
    }
    if architecture not in classes:
        raise ValueError(f"architecture {architecture!r}; valid: {', '.join(classes)}")
    config_class, sae_class = classes[architecture]
    extra: dict[str, Any] = {"k": k or 4} if architecture == "topk" else {}
    if hook_name.endswith("hook_z"):
        extra["reshape_activations"] = "hook_z"
    cfg = config_class(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu", **extra)
    cfg.metadata.hook_name = hook_name
    cfg.metadata.model_name = model_name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = sae_class(cfg)
        if architecture == "jumprelu":
            sae.threshold.data = torch.rand(d_sae) * 0.2
        if architecture == "gated":
            torch.nn.init.normal_(sae.b_mag, std=0.1)
    sae.requires_grad_(False)
    return sae.eval()
