"""Parsers for outside input with limits, in one place: every JSON and TOML document warmstart reads (manifests, app
records, stamps, health records, registry manifests, spec files) goes through here, so a crafted one is refused
with ValueError instead of exhausting the stack (RecursionError), smuggling a NUL byte to the OS, or carrying a
NaN/infinity that later sleeps forever or overflows.

Durations and counts from flags and files are checked by `seconds`, the one rule for "a finite number of seconds
in range".
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # deepest nesting any of our documents has is 5 (a spec's warm-up calls); 32 leaves room
MAX_SECONDS = 366 * 86400.0  # a duration beyond a year is a slip (or an attack), not a setting


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def loads_json(text: str | bytes) -> Any:
    """json.loads with NaN/Infinity refused and the result checked by `check`."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    check(value)
    return value


def loads_toml(text: str) -> dict[str, Any]:
    """tomllib.loads with the result checked by `check` (TOML allows nan and inf: no document of ours needs them)."""
    import tomllib

    try:
        value = tomllib.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    check(value)
    return value


def check(value: Any) -> None:
    """Refuse a decoded document nested deeper than MAX_DEPTH, with a NUL byte in a string or key, or with a
    non-finite number (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, inner in item.items():
                    if "\x00" in key:
                        raise ValueError("a key holds a NUL byte")
                    stack.append((inner, depth + 1))
            else:
                stack.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, str) and "\x00" in item:
            raise ValueError(f"a string holds a NUL byte ({item[:40]!r})")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{item} is not a finite number")


def seconds(value: float, what: str, *, zero_ok: bool = False) -> float:
    """`value` when it is a finite number of seconds above 0 (or 0 with `zero_ok`) and at most a year; else
    ValueError naming `what` (callers turn it into their usage error)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: expected a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{what}: must be {'0 or more' if zero_ok else 'greater than 0'} seconds, got {value:g}")
    if value > MAX_SECONDS:
        raise ValueError(f"{what}: {value:g} seconds is more than a year")
    return float(value)
