"""Test builders: the package's tiny random model and SAE (see `saeinverse.models.tiny`)."""

from saeinverse.models.tiny import (  # noqa: F401
    CHARACTERS,
    SPECIAL_TOKENS,
    START_TOKEN,
    TINY_MODEL_NAME,
    TINY_VOCAB,
    char_tokenizer,
    tiny_model,
    tiny_model_config,
    tiny_sae,
)
