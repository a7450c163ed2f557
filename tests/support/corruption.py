"""Damage to a node's stored data, as bit rot would do it: flipped bits in a file."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def flip_byte_of(path: str, needle: bytes) -> int:
    """Flip one bit in the middle of every occurrence of `needle` in the file at `path`; how many.

    LMDB's copy-on-write can leave stale copies of a page in free pages (how many depends on
    where transactions happened to end); flipping those too is harmless.
    """
    with open(path, "r+b") as f:
        data = f.read()
        pos = data.find(needle)
        assert pos >= 0, f"{needle!r} is not in {path}"
        n = 0
        while pos >= 0:
            at = pos + len(needle) // 2
            f.seek(at)
            f.write(bytes([data[at] ^ 0x20]))
            n += 1
            pos = data.find(needle, pos + 1)
        f.flush()
        os.fsync(f.fileno())
    return n


def fingerprint(path: Path) -> dict[str, str]:
    """Every file and dir under `path` (relative name) with its bytes' sha256 ("dir" for a directory)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), path)] = "dir"
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
    return out
