"""State-changing operator actions, shared by the CLI and the HTTP API: enqueue, task
retry/cancel/restart, provider pause/resume/scale/fallback, and the dead-letter queues.
Read-only views live in :mod:`kgworker.observe`."""
