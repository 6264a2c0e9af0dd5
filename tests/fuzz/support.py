"""Shared pieces of the fuzz suite: settings per profile and strategies for outside input."""

from __future__ import annotations

import os
import string
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

PROFILE = os.environ.get("RW_FUZZ_PROFILE", "ci")
_CI_EXAMPLES = 50
_LONG_FACTOR = 20


def fuzz_settings(examples: int = _CI_EXAMPLES, long: int | None = None) -> settings:
    """The active profile with `examples` in ci and `long` (default 20x as many) in the long profile."""
    profile = settings.get_profile(PROFILE)
    count = examples if PROFILE != "long" else (long if long is not None else examples * _LONG_FACTOR)
    return settings(profile, max_examples=count)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars (huge and non-finite numbers too), lists and objects, nested."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=-(10**40), max_value=10**40)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
        max_leaves=max_leaves,
    )


# Text with the characters parsers choke on: quotes, braces, fences, control characters, surrogate-free unicode.
tricky_text = st.text(
    alphabet=st.sampled_from([*string.printable, "{", "}", "[", "]", '"', "`", "\x00", "é", "\u2028", "🚦"]),
    max_size=200,
)


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """`data` with a few bytes flipped, a slice removed or duplicated, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        if not out:
            break
        kind = draw(st.sampled_from(["flip", "delete", "duplicate", "truncate", "insert"]))
        i = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[i] = draw(st.integers(0, 255))
        elif kind == "delete":
            del out[i : i + draw(st.integers(1, 64))]
        elif kind == "duplicate":
            out[i:i] = out[i : i + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del out[i:]
        else:
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
    return bytes(out)
