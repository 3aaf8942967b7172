"""``POST /v1/embeddings``: what the Embeddings API contributes to the pipeline.

Never streamed; usage is ``prompt_tokens`` and ``total_tokens``. Embeddings have no
``safety_identifier`` and no ``prompt_cache_key``: the ``openai`` dialect sets ``user``.
"""

from __future__ import annotations

from typing import Any

from tally.errors import InvalidRequest
from tally.services.endpoint import (
    Endpoint,
    error_status,
    require_model,
    require_object,
    text,
    usage_of,
)
from tally.services.usage import Outcome

_INPUT = (
    "input must be a non-empty string, or a non-empty array of strings, of token ids, "
    "or of arrays of token ids."
)


class Embeddings(Endpoint):
    """OpenAI's Embeddings API."""

    name = "embeddings"
    path = "/embeddings"
    embeddings = True

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
            raise InvalidRequest(_INPUT, param="input")

    def read_answer(self, data: dict[str, Any], outcome: Outcome) -> int | None:
        """Usage and model of an embeddings answer."""
        if isinstance(data.get("error"), dict) and "data" not in data:
            return error_status(data["error"].get("code"))
        outcome.usage = usage_of(data.get("usage"))
        outcome.generation_id = text(data.get("id"))
        outcome.model = text(data.get("model"))
        return None


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
