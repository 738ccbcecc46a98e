"""The fault injector of the fake LLM server: :mod:`kgworker.eval.faults` (shipped in the
package, so ``kgworker eval`` runs from a wheel), under the name the tests import."""

from kgworker.eval.faults import (
    ALL_FAULTS,
    CONTENT,
    FORMAT,
    HALLUCINATED_NAME,
    MISSING_NAME,
    TRANSPORT,
    FaultPlan,
    apply_content,
    render,
)

__all__ = [
    "ALL_FAULTS",
    "CONTENT",
    "FORMAT",
    "HALLUCINATED_NAME",
    "MISSING_NAME",
    "TRANSPORT",
    "FaultPlan",
    "apply_content",
    "render",
]
