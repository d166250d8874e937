"""The ``MODEL:VERSION`` argument: split, or refused with the reason."""

from __future__ import annotations

import pytest

from hub.cli.model_ref import parse_model_version
from hub.errors import InvalidRequestError


def test_model_and_version_split_or_are_refused() -> None:
    assert parse_model_version("digits:1.2.0") == ("digits", "1.2.0")
    for bad in ("digits", "digits:", ":1.0.0"):
        with pytest.raises(InvalidRequestError, match="expected MODEL:VERSION"):
            parse_model_version(bad)
