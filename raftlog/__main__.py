"""`python -m raftlog`: the same as the `raftlog` command."""
from raftlog.cli import main

main()
