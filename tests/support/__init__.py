"""Helpers shared by tests of every tier, imported as `support.<module>` (tests/ is on sys.path).

async_wait: polling in asyncio tests; polling, safety: waiting and safety checks of the process
tests; interaction: the lock-step network of the engine tests; hot_strategies: Hypothesis
strategies of the hot-path differential and fuzz tests; nodes: in-process nodes on 127.0.0.1;
corruption: flipping bytes in a stored log.
"""
