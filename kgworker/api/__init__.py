"""The node's HTTP endpoint: health, readiness, metrics and status views, and the control
actions of :mod:`kgworker.control` behind a bearer token."""
