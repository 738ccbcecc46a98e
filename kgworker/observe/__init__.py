"""Seeing what a node does: logs, store health checks, metrics and status."""
