"""Helpers shared by the process, history, fuzz and namespace tests (imported as `support.<module>`)."""
