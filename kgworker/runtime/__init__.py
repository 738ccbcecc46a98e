"""The worker runtime: consumers, slots, leases, reaper, registry, supervisor, shutdown."""

from kgworker.runtime.handler import (
    Job,
    JobHandler,
    JobStart,
    PermanentJobError,
    SimpleHandler,
    Unit,
    UnitKey,
)

__all__ = [
    "Job",
    "JobHandler",
    "JobStart",
    "PermanentJobError",
    "SimpleHandler",
    "Unit",
    "UnitKey",
]
