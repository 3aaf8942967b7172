"""``POST /v1/embeddings``: what the Embeddings API contributes to the pipeline.

Never streamed; usage is ``prompt_tokens`` and ``total_tokens``. Embeddings have no
``safety_identifier`` and no ``prompt_cache_key``: the ``openai`` dialect sets ``user``.
"""

from __future__ import annotations

from typing import Any

from tally.errors import InvalidInput
from tally.proxy.endpoints.base import (
    Endpoint,
    require_model,
    require_object,
)

_INPUT = (
    "input must be a non-empty string, or a non-empty array of strings, of token ids, "
    "or of arrays of token ids."
)


class Embeddings(Endpoint):
    """OpenAI's Embeddings API."""

    name = "embeddings"
    path = "/embeddings"
    operation = "embeddings"
    embeddings = True
    content_field = "data"
    prompt_fields = ("input",)

    def validate(self, body: Any) -> None:
        """Refuse a body that is not an embeddings request, naming the field."""
        require_object(body)
        require_model(body)
        value = body.get("input")
        if isinstance(value, str):
            ok = bool(value)
        elif isinstance(value, list) and value:
            ok = all(_is_input_item(item) for item in value)
        else:
            ok = False
        if not ok:
            raise InvalidInput(_INPUT, field="input")


def _is_input_item(item: Any) -> bool:
    if isinstance(item, str):
        return bool(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return True
    return (
        isinstance(item, list)
        and bool(item)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
    )
