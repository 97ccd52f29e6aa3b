"""The model's tokenizer, as the official SDK loads it (``get_tokenizer()`` of both clients).

It is the model's Hugging Face tokenizer, resolved as the official SDK
does (``_load_tokenizer_from_model_info``): the server's ``tokenizer_id`` when it
gives one, else one derived from the model's name (the Llama 3 tokenizer from an
ungated copy, ``org/model/variant`` as ``org/model``), the revisions the SDK pins
for the tokenizers that run remote code, Thinking Machines' own through
``tml_tokenizers`` when installed, and ``transformers.AutoTokenizer``.
transformers is not a dependency: it is imported when a tokenizer is asked for,
with a clear error when it is not installed.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["load_tokenizer", "tokenizer_source"]

# Tokenizers that run remote code, each pinned to the revision the official SDK pins.
_PINNED = {
    "moonshotai/Kimi-K2-Thinking": "612681931a8c906ddb349f8ad0f582cb552189cd",
    "moonshotai/Kimi-K2.5": "4d01dfe0332d63057c186e0b262165819efb6611",
    "moonshotai/Kimi-K2.6": "b5aabbfb20227ed42becbf5541dbffd213942c58",
    "moonshotai/Kimi-K3": "f831ab66814297da540d832a5235f8e904f29d06",
}
_ALIASES = {"moonshotai/Kimi-K2.5-Text-Only": "moonshotai/Kimi-K2.5"}


def tokenizer_source(model_name: str, tokenizer_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """The Hugging Face id of ``model_name``'s tokenizer and the ``from_pretrained`` keywords."""
    if tokenizer_id is None:
        name = model_name.split(":")[0]
        if name.startswith("meta-llama/Llama-3"):
            tokenizer_id = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer"  # not gated
        elif name.count("/") == 2:
            tokenizer_id = name.rsplit("/", 1)[0]  # org/model/variant: org/model's tokenizer
        else:
            tokenizer_id = name
    tokenizer_id = _ALIASES.get(tokenizer_id, tokenizer_id)
    revision = _PINNED.get(tokenizer_id)
    return tokenizer_id, {} if revision is None else {"trust_remote_code": True, "revision": revision}


@functools.lru_cache(maxsize=32)
def load_tokenizer(model_name: str, tokenizer_id: str | None = None) -> Any:
    """The model's ``PreTrainedTokenizer`` (loaded once per model and id, as the SDK caches it)."""
    source, options = tokenizer_source(model_name, tokenizer_id)
    if source.startswith(("TML/", "thinkingmachines/")):
        try:
            from tml_tokenizers.tinker_tokenizers import get_tinker_tokenizer
        except ImportError:
            raise RuntimeError(
                f"The tokenizer of {source} is not on Hugging Face: install tml-tokenizers, or build a "
                "renderer with tml-renderers instead (https://pypi.org/project/tml-renderers/)"
            ) from None
        tokenizer = get_tinker_tokenizer(source)
        if tokenizer is not None:
            return tokenizer
    try:
        from transformers.models.auto.tokenization_auto import AutoTokenizer
    except ImportError as error:
        raise ImportError(
            f"get_tokenizer() needs the transformers package (pip install transformers) to load {source}"
        ) from error
    return AutoTokenizer.from_pretrained(source, fast=True, **options)
