"""A fake LLM provider: a real HTTP server on loopback (aiohttp) in three wire formats.

Routes: OpenAI-compatible ``/chat/completions`` and ``/v1/chat/completions``, Anthropic
``/messages`` and ``/v1/messages``, Ollama ``/api/generate``. Every request is logged with
its arrival time, so a test can prove from the server's side what a fleet of workers did
(e.g. never more than N requests in any window). Optional limits mimic a provider:
``capacity`` (hidden concurrency K: 429 above it; change it live with ``POST /_fake/config
{"capacity": K}``) and ``rpm_limit`` per ``rpm_window``
seconds (429 above it, counted as a violation). Token usage is deterministic: one token
per two characters of prompt and of answer, rounded up.

Control endpoints for subprocess use: ``GET /_fake/log``, ``POST /_fake/config``,
``POST /_fake/reset``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from tests.fakellm.answers import Answerer, AnswerRequest, answer_for_kind, default_answerer
from tests.fakellm.faults import FaultPlan, apply_content, render


@dataclass
class RequestRecord:
    t: float  # arrival, time.time()
    path: str
    style: str
    kind: str
    faults: list[str]
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done: float = 0.0  # answer ready, time.time(); [t, done) is the request's time in flight


@dataclass
class FakeLLM:
    """The server. Use ``async with FakeLLM(...) as fake:`` and point a provider at ``fake.url``."""

    answerer: Answerer = default_answerer
    plan: FaultPlan = field(default_factory=FaultPlan)
    latency: float = 0.0
    latency_jitter: float = 0.0  # each answer takes latency + uniform(0, jitter) seconds
    capacity: int | None = None
    rpm_limit: int | None = None
    rpm_window: float = 60.0
    host: str = "127.0.0.1"
    port: int = 0
    log: list[RequestRecord] = field(default_factory=list)
    violations: int = 0

    def __post_init__(self) -> None:
        self._in_flight = 0
        self._admitted: deque[float] = deque()
        self._content_rng = random.Random(self.plan.seed + 1)
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle --
    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        for path in ("/chat/completions", "/v1/chat/completions"):
            app.router.add_post(path, self._openai)
        for path in ("/messages", "/v1/messages"):
            app.router.add_post(path, self._anthropic)
        app.router.add_post("/api/generate", self._ollama)
        app.router.add_get("/_fake/log", self._get_log)
        app.router.add_post("/_fake/config", self._configure)
        app.router.add_post("/_fake/reset", self._reset)
        return app

    async def start(self) -> FakeLLM:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def requests(self, status: int | None = None) -> list[RequestRecord]:
        return [r for r in self.log if status is None or r.status == status]

    # ------------------------------------------------------------------- handling --
    async def _serve(self, request: web.Request, style: str, prompt: str, model: str) -> Any:
        """(answer text, finish reason, record) or a ready web.Response for a fault."""
        answer_request = AnswerRequest.from_prompt(prompt, model, style)
        record = RequestRecord(time.time(), request.path, style, answer_request.kind, [])
        self.log.append(record)
        if self.rpm_limit is not None:
            now = time.monotonic()
            while self._admitted and self._admitted[0] <= now - self.rpm_window:
                self._admitted.popleft()
            if len(self._admitted) >= self.rpm_limit:
                self.violations += 1
                return self._error(record, 429, "rpm limit exceeded", retry_after=1.0)
            self._admitted.append(now)
        if self.capacity is not None and self._in_flight >= self.capacity:
            return self._error(record, 429, "server overloaded (capacity)", retry_after=None)
        self._in_flight += 1
        try:
            if self.latency or self.latency_jitter:
                await asyncio.sleep(self.latency + random.uniform(0, self.latency_jitter))
            faults = self.plan.draw()
            record.faults = list(faults)
            fault = next(iter(faults), None)
            if fault == "timeout":
                await asyncio.sleep(self.plan.hang_seconds)
            elif fault == "reset":
                record.status = 0
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            elif fault in ("http_429", "http_500", "http_503", "http_400", "http_401", "http_403"):
                status = int(fault[5:])
                retry_after = self.plan.retry_after if status in (429, 503) else None
                return self._error(record, status, f"injected {status}", retry_after=retry_after)
            elif fault == "content_filter" and style != "openai":
                return self._error(record, 400, "content filter: input rejected by policy")
            full = self.answerer(answer_request)
            answer = answer_for_kind(answer_request.kind, full)
            answer = apply_content(answer, faults, self._content_rng)
            text, finish = render(answer, faults)
            if fault == "content_filter":
                text, finish = "", "content_filter"
            record.prompt_tokens = (len(prompt) + 1) // 2
            record.completion_tokens = (len(text) + 1) // 2
            return text, finish, record
        finally:
            self._in_flight -= 1
            record.done = time.time()

    def _error(
        self, record: RequestRecord, status: int, message: str, retry_after: float | None = None
    ) -> web.Response:
        record.status = status
        record.done = record.done or time.time()
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        return web.json_response(body, status=status, headers=headers)

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
        result = await self._serve(request, "openai", prompt, body.get("model", ""))
        if isinstance(result, web.StreamResponse):
            return result
        text, finish, record = result
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": record.prompt_tokens,
                    "completion_tokens": record.completion_tokens,
                    "total_tokens": record.prompt_tokens + record.completion_tokens,
                },
            }
        )

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        parts = [body.get("system", "")] + [m.get("content", "") for m in body.get("messages", [])]
        result = await self._serve(request, "anthropic", "\n".join(parts), body.get("model", ""))
        if isinstance(result, web.StreamResponse):
            return result
        text, finish, record = result
        stop = {"length": "max_tokens", "stop": "end_turn"}.get(finish, finish)
        if finish == "content_filter":
            stop = "refusal"
        return web.json_response(
            {
                "id": f"msg_{uuid.uuid4().hex[:12]}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", ""),
                "content": [{"type": "text", "text": text}],
                "stop_reason": stop,
                "usage": {
                    "input_tokens": record.prompt_tokens,
                    "output_tokens": record.completion_tokens,
                },
            }
        )

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = f"{body.get('system', '')}\n{body.get('prompt', '')}"
        result = await self._serve(request, "ollama", prompt, body.get("model", ""))
        if isinstance(result, web.StreamResponse):
            return result
        text, finish, record = result
        return web.json_response(
            {
                "model": body.get("model", ""),
                "response": text,
                "done": True,
                "done_reason": finish,
                "prompt_eval_count": record.prompt_tokens,
                "eval_count": record.completion_tokens,
            }
        )

    # -------------------------------------------------------------------- control --
    async def _get_log(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": [asdict(r) for r in self.log], "violations": self.violations}
        )

    async def _configure(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "faults" in body or "seed" in body:
            self.plan = FaultPlan(
                rates=body.get("faults", {}),
                seed=body.get("seed", 0),
                retry_after=body.get("retry_after", 1.0),
                hang_seconds=body.get("hang_seconds", 30.0),
            )
        for key in ("latency", "latency_jitter", "capacity", "rpm_limit", "rpm_window"):
            if key in body:
                setattr(self, key, body[key])
        return web.json_response({"ok": True})

    async def _reset(self, request: web.Request) -> web.Response:
        self.log.clear()
        self.violations = 0
        self._admitted.clear()
        return web.json_response({"ok": True})


def concurrency_samples(
    records: list[dict[str, Any]], start: float, end: float, step: float = 0.05
) -> list[int]:
    """Requests in flight at the provider every ``step`` seconds in [start, end) (admitted
    requests only: a 429 for capacity is answered at once)."""
    spans = sorted((r["t"], r["done"]) for r in records if r["status"] == 200 and r["done"])
    samples: list[int] = []
    at = start
    while at < end:
        samples.append(sum(1 for t, done in spans if t <= at < done))
        at += step
    return samples


def max_in_window(times: list[float], window: float) -> int:
    """Most requests in any half-open interval of ``window`` seconds."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best
