"""The tables kgworker maps: chaishu's (:mod:`.chaishu`) and its own (:mod:`.ours`).

Importing this package registers both on ``Base.metadata``, which the migrations and the
drift checks compare against.
"""

from kgworker.store.schema import chaishu, ours  # noqa: F401  (registers the tables)
