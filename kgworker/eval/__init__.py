"""Offline extraction-quality evaluation on the gold mini-novel (``kgworker eval``)."""
