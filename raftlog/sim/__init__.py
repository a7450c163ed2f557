"""The test harness beside the engine: a seeded, deterministic simulator of whole clusters
(simulation.py; membership changes in membership.py, client sessions in sessions.py) and the
history checker for real clients' operations (history.py).

The engine (raftlog/core/) never imports this package; `raftlog sim` and the tests do.
"""
