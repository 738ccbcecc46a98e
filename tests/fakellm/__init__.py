"""A fake LLM provider for tests and benchmarks (see ``server.py``).

``FakeLLM(answerer=..., plan=FaultPlan(...))`` runs in-process; ``FakeLLMProcess`` runs it as
``python -m tests.fakellm``. A gold answerer plugs in as ``FakeLLM(answerer=fn)`` where
``fn(AnswerRequest) -> dict`` returns the full extraction for ``request.text``.
"""

from tests.fakellm.answers import Answerer, AnswerRequest, answer_for_kind, default_answerer
from tests.fakellm.faults import ALL_FAULTS, CONTENT, FORMAT, TRANSPORT, FaultPlan
from tests.fakellm.process import FakeLLMProcess
from tests.fakellm.server import FakeLLM, RequestRecord, concurrency_samples, max_in_window

__all__ = [
    "ALL_FAULTS",
    "CONTENT",
    "FORMAT",
    "TRANSPORT",
    "AnswerRequest",
    "Answerer",
    "FakeLLM",
    "FakeLLMProcess",
    "FaultPlan",
    "RequestRecord",
    "answer_for_kind",
    "concurrency_samples",
    "default_answerer",
    "max_in_window",
]
