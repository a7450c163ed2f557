"""README's transcripts are what the commands print today: docs/transcripts.py runs them and compares.

The script starts a 3-node `raftlog cluster` on free loopback ports in a temp dir, runs the
quickstart, the Client example and the embedding example as README shows them, and compares
with README's copies after normalising times, process ids and hex ids (its module doc lists
every difference it allows). A stale README fails here with the diff; `python
docs/transcripts.py --write` rewrites README's copies.
"""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "docs", "transcripts.py")


def test_readme_transcripts_match_what_the_commands_print_today():
    proc = subprocess.run([sys.executable, SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"README.md's transcripts are stale or could not be produced:\n{proc.stdout}"
    assert "4 transcripts match" in proc.stdout, proc.stdout
