"""Answers and call records already paid for, kept in memory until MySQL takes them.

An answer is money spent: when the cache row or the call record cannot be written (MySQL
restarting, a failover), dropping it would make the chapter's redo pay again and the bill
under-report. So a failed write keeps the item here, a lookup answers from the kept
answers before asking MySQL, and a background task writes what is kept once MySQL answers
again (also woken at once by any successful store access). Writes are idempotent (cache
rows are upserts by key, call records are skipped by ``call_id``), so an item whose write
committed although its reply was lost is not doubled when it is written again; an item is
forgotten only after a write of it succeeded, and never written after that.

Bounded: a node that keeps more than the limits below forgets the oldest items, with an
error log saying what that costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

from kgworker.llm.accounting import CallRecord, CallRecorder
from kgworker.llm.cache import CachedAnswer, CacheEntry, ResponseCache, store_error

log = logging.getLogger(__name__)

#: Answers kept unwritten. No call starts while the cache cannot be read, so an outage adds
#: only the answers of calls already in flight when it began — at most one per busy slot
#: (KG_MAX_TOTAL, tens) per outage; 1,000 answers of a few kilobytes are a few megabytes.
MAX_KEPT_ANSWERS = 1000
#: Call records kept unwritten (~0.5 KB each). With the cache off (``--no-cache``) calls go
#: on during an outage; 20,000 records hold about half an hour of a busy node's calls.
MAX_KEPT_RECORDS = 20_000
#: Rows per insert when writing kept items (one statement each, well under max_allowed_packet
#: for records; answers go in smaller batches because each is kilobytes).
RECORD_BATCH = 500
ANSWER_BATCH = 50
#: Seconds between write attempts while MySQL refuses them, doubling up to the maximum.
RETRY_MIN, RETRY_MAX = 0.5, 5.0
#: Seconds ``aclose`` spends writing what is still kept before giving up on it.
CLOSE_FLUSH_SECONDS = 5.0


class PendingWrites:
    """The kept answers (an LRU by cache key) and call records of one node."""

    def __init__(
        self,
        cache: ResponseCache | None,
        recorder: CallRecorder | None,
        *,
        max_answers: int = MAX_KEPT_ANSWERS,
        max_records: int = MAX_KEPT_RECORDS,
    ) -> None:
        self._cache = cache
        self._recorder = recorder
        self._max_answers = max_answers
        self._max_records = max_records
        self._answers: OrderedDict[str, CacheEntry] = OrderedDict()  #: by its first key
        self._by_key: dict[str, str] = {}  #: every key of a kept answer → its first key
        self._records: OrderedDict[str, CallRecord] = OrderedDict()  #: by call_id
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._closed = False
        #: Items forgotten unwritten because the limits were reached (for tests and status).
        self.dropped_answers = 0
        self.dropped_records = 0

    # --- what is kept -----------------------------------------------------------------------
    @property
    def kept_answers(self) -> int:
        return len(self._answers)

    @property
    def kept_records(self) -> int:
        return len(self._records)

    def answer(self, keys: Sequence[str]) -> CachedAnswer | None:
        """A kept answer under any of ``keys`` (the exact key first)."""
        for key in keys:
            first = self._by_key.get(key)
            if first is not None:
                self._answers.move_to_end(first)
                return self._answers[first].answer
        return None

    # --- writing --------------------------------------------------------------------------
    async def store_answer(self, entry: CacheEntry) -> None:
        """Write the answer to the cache now, or keep it until that works."""
        if self._cache is None:
            return
        try:
            await self._cache.put([entry])
        except Exception as exc:
            self._keep_answer(entry)
            self._failed(exc)
            return
        self._succeeded()

    async def store_record(self, record: CallRecord) -> None:
        """Insert the call record now, or keep it until that works."""
        if self._recorder is None:
            return
        try:
            await self._recorder.record([record])
        except Exception as exc:
            self._keep_record(record)
            self._failed(exc)
            return
        self._succeeded()

    def store_reachable(self) -> None:
        """The store just answered: write what is kept now rather than at the next retry."""
        if self._answers or self._records:
            self._wake.set()

    async def flush(self) -> bool:
        """Write every kept item once; True when nothing is left (errors are kept, logged)."""
        async with self._flushing:
            try:
                written = await self._write_answers() + await self._write_records()
            except Exception as exc:
                self._failed(exc)
                return False
            if written:
                log.info("kept LLM answers and call records written (%d items)", written)
            self._succeeded()
            return not (self._answers or self._records)

    async def _write_answers(self) -> int:
        done = 0
        while self._answers and self._cache is not None:
            batch = list(self._answers.values())[:ANSWER_BATCH]
            await self._cache.put(batch)
            for entry in batch:
                self._forget_answer(entry)
            done += len(batch)
        return done

    async def _write_records(self) -> int:
        done = 0
        while self._records and self._recorder is not None:
            batch = list(self._records.values())[:RECORD_BATCH]
            await self._recorder.record(batch)
            for record in batch:
                self._records.pop(record.call_id, None)
            done += len(batch)
        return done

    # --- background -----------------------------------------------------------------------
    def _start(self) -> None:
        if (self._task is None or self._task.done()) and not self._closed:
            self._task = asyncio.create_task(self._run(), name="llm-pending-writes")

    async def _run(self) -> None:
        """Retry while something is kept (backing off while MySQL refuses), then end."""
        delay = RETRY_MIN
        while not self._closed and (self._answers or self._records):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            delay = RETRY_MIN if await self.flush() else min(delay * 2, RETRY_MAX)

    async def aclose(self) -> None:
        """Stop the background task after a last, bounded attempt to write what is kept."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._answers or self._records:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), CLOSE_FLUSH_SECONDS)
        if self._answers or self._records:
            log.error("stopping with %d LLM answers and %d call records unwritten: the "
                      "answers are paid again if asked again, the calls are missing from "
                      "kgworker_llm_calls", len(self._answers), len(self._records))

    # --- bookkeeping ----------------------------------------------------------------------
    def _keep_answer(self, entry: CacheEntry) -> None:
        first = entry.keys[0]
        if first in self._answers:
            self._answers.move_to_end(first)
            return
        self._answers[first] = entry
        for key in entry.keys:
            self._by_key[key] = first
        while len(self._answers) > self._max_answers:
            _, oldest = next(iter(self._answers.items()))
            self._forget_answer(oldest)
            self.dropped_answers += 1
            if _worth_logging(self.dropped_answers):
                log.error("%d LLM answers forgotten unwritten (over %d kept): asking them "
                          "again will be paid again", self.dropped_answers, self._max_answers)
        self._start()

    def _forget_answer(self, entry: CacheEntry) -> None:
        self._answers.pop(entry.keys[0], None)
        for key in entry.keys:
            if self._by_key.get(key) == entry.keys[0]:
                del self._by_key[key]

    def _keep_record(self, record: CallRecord) -> None:
        self._records[record.call_id] = record
        while len(self._records) > self._max_records:
            self._records.popitem(last=False)
            self.dropped_records += 1
            if _worth_logging(self.dropped_records):
                log.error("%d LLM call records forgotten unwritten (over %d kept): "
                          "kgworker_llm_calls under-reports by that many calls",
                          self.dropped_records, self._max_records)
        self._start()

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("LLM cache rows and call records not written (%s): kept in memory "
                        "and written when MySQL answers", store_error(exc))

    def _succeeded(self) -> None:
        if self._failing and not (self._answers or self._records):
            self._failing = False
        self.store_reachable()


def _worth_logging(count: int) -> bool:
    """1, 2, 4, 8, ...: a long outage logs its losses without a line per item."""
    return count & (count - 1) == 0
