"""Values read back from Redis: our clients return bytes (rq needs them undecoded), typed loosely."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """A Redis reply as `str`: bytes are UTF-8-decoded, anything else is `str()`-ed."""
    return value.decode() if isinstance(value, bytes) else str(value)


def optional_text(value: Any) -> str | None:
    """As `text`, but None (a missing key or field) stays None."""
    return None if value is None else text(value)
