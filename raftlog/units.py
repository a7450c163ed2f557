"""Sizes and durations as people write them (`2GiB`, `7d`): parsed exactly, or ValueError naming the text."""
from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_NUMBER_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*")


def _split(text: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.fullmatch(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a number with an optional unit")
    return float(match.group(1)), match.group(2)


def parse_size(text: str) -> int:
    """Bytes of '2GiB', '500MB', '64k' or a bare number of bytes (KB/MB/GB/TB are powers of 1000, KiB... of 1024)."""
    number, unit = _split(text)
    if unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r}: unknown size unit {unit!r} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")
    return int(number * _SIZE_UNITS[unit])


def parse_duration_ms(text: str) -> int:
    """Milliseconds of '500ms', '30s', '2m', '12h', '7d', '1w' or a bare number of seconds."""
    number, unit = _split(text)
    if unit == "":
        unit = "s"
    if unit not in _DURATION_MS:
        raise ValueError(f"{text!r}: unknown duration unit {unit!r} (use ms, s, m, h, d or w)")
    return int(number * _DURATION_MS[unit])


def format_size(n: int) -> str:
    """'96.0KiB', '2.0GiB', '512B': bytes for people, in powers of 1024."""
    if n < 1024:
        return f"{n}B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"
