"""`parse_model_version`: the ``MODEL:VERSION`` argument several commands take (kept light: no monitoring imports)."""

from __future__ import annotations

from hub.errors import InvalidRequestError

__all__ = ["parse_model_version"]


def parse_model_version(text: str) -> tuple[str, str]:
    """Split ``MODEL:VERSION``; `InvalidRequestError` otherwise."""
    model, sep, version = text.partition(":")
    if not sep or not model or not version:
        raise InvalidRequestError(f"expected MODEL:VERSION, got {text!r}")
    return model, version
