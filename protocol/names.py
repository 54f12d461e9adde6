"""Names a client sends (a model name, a route, a user, a metadata key): no control characters.

Such a name travels on into response headers (where a NUL or a line break is illegal, and the
server would fail the answer after the upstream was paid for), log lines and storage (PostgreSQL's
text refuses a NUL). So it is refused up front, as a 400 naming the field. Prompts and other free
text are not names and are left alone.
"""

from __future__ import annotations

import unicodedata

from relaybox.protocol.errors import RelayError

# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def control_character(name: str) -> int | None:
    """Where the first control character in `name` is, or None when there is none."""
    if name.isprintable():  # the common case, at C speed (its refusals are a superset of ours)
        return None
    for index, character in enumerate(name):
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return index
    return None


def check_name(name: str, param: str, *, code: str = "invalid_request") -> None:
    """Raise the 400 that names `param` when `name` holds a control character."""
    index = control_character(name)
    if index is not None:
        raise RelayError(
            400,
            f"'{param}' must not contain control characters (U+{ord(name[index]):04X} at position {index})",
            "invalid_request_error",
            code=code,
            param=param,
        )
