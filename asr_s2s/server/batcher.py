"""The bounded queue and the one decoding thread: requests that wait together are decoded together.

A request is admitted (a place in the queue) before its body is read, so that a full server answers 503 at
once instead of taking in more uploads; the place is freed when the decoder takes the request. The decoder
waits for a request, then ``batch_wait_s`` for others, and takes every queued request with the same options
(at most ``max_batch_files``): one round, one :meth:`Transcriber.transcribe_many` call, whose segments share
padded batches. Segments reach a streaming request's event queue as each batch is decoded; a request whose
client went away is taken out of the queue, or stops being read and decoded mid-round.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from asr_s2s.audio import SAMPLE_RATE_HZ
from asr_s2s.errors import AsrS2SError, TranscriptionCancelled
from asr_s2s.server.metrics import Metrics, QueueState
from asr_s2s.transcriber import Transcriber
from asr_s2s.transcription import AudioInput, FileResult, Segment, TranscribeOptions

log = logging.getLogger("asr_s2s.server")


def warm_up(transcriber: Transcriber, options: TranscribeOptions) -> None:
    """Transcribe a second of noise, so that the first request does not pay for lazy imports (librosa's take
    seconds) and first calls; this also builds the scorers, so that bad options stop the start, not a request."""
    import numpy as np

    noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE_HZ).astype(np.float32)
    quiet = logging.getLogger("asr_s2s")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the noise's odd transcript is warned about
    try:
        for result in transcriber.transcribe_many([AudioInput("warm-up", noise, SAMPLE_RATE_HZ)], options):
            if result.error is not None:
                raise result.error
    finally:
        quiet.setLevel(level)


class QueueFull(Exception):
    """No place in the queue; ``retry_after_s`` estimates when one frees up."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class InternalError(Exception):
    """Decoding failed in a way that is the server's fault; the log has the traceback, the client this message."""


class Ticket:
    """A place in the queue, held from admission until the decoder takes the request (or it fails first)."""

    def __init__(self) -> None:
        self.held = True


@dataclass(eq=False)
class Job:
    """One admitted request: its audio (a file in its temporary folder), options and where results go.

    The decoding thread calls :meth:`publish` and :meth:`finish`; they hand over to the event loop.
    ``future`` gets the :class:`FileResult` or the exception; a streaming job's ``events`` also gets each
    decoded :class:`Segment` and, last, the same outcome.
    """

    input: AudioInput
    options: TranscribeOptions
    audio_s: float
    loop: asyncio.AbstractEventLoop
    ticket: Ticket
    stream: bool = False
    future: asyncio.Future = field(init=False)
    events: asyncio.Queue | None = field(init=False)
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()
        self.events = asyncio.Queue() if self.stream else None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def publish(self, segment: Segment) -> None:
        if self.events is not None and not self.cancelled:
            self.loop.call_soon_threadsafe(self.events.put_nowait, segment)

    def finish(self, outcome: FileResult | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self._resolve, outcome)
        except RuntimeError:  # the event loop is closed: the server is stopping
            pass

    def _resolve(self, outcome: FileResult | BaseException) -> None:
        if self.events is not None:
            self.events.put_nowait(outcome)
        if not self.future.done():
            self.future.set_result(outcome)


class Batcher:
    """Admits requests up to ``queue_size`` and decodes them in rounds on one thread."""

    def __init__(self, transcriber: Transcriber, metrics: Metrics, queue_size: int, batch_wait_s: float = 0.01,
                 max_batch_files: int = 64) -> None:
        self.transcriber, self.metrics = transcriber, metrics
        self.queue_size, self.batch_wait_s, self.max_batch_files = queue_size, batch_wait_s, max_batch_files
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._admitted = 0  # tickets held: requests uploading, being checked, or queued
        self._decoding: list[Job] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the event loop's side ------------------------------------------------------
    def admit(self) -> Ticket:
        """A place in the queue. :raises QueueFull: with an estimate of when to retry."""
        with self._cond:
            if self._admitted >= self.queue_size:
                raise QueueFull(self._retry_after_s())
            self._admitted += 1
            return Ticket()

    def release(self, ticket: Ticket) -> None:
        """Give a place back (idempotent)."""
        with self._cond:
            self._release(ticket)

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise QueueFull(1)
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """The client went away: take the job out of the queue, or stop its decoding."""
        if job.cancelled:
            return
        job._cancelled.set()
        self.metrics.cancel()
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                self._release(job.ticket)

    def state(self) -> QueueState:
        with self._cond:
            return QueueState(self._admitted, self.queue_size, len(self._decoding),
                              sum(j.audio_s for j in self._queue))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="asr-s2s-decoder", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel every queued and running request and wait for the decoding thread."""
        with self._cond:
            self._stopping = True
            jobs = [*self._queue, *self._decoding]
            self._queue.clear()
            self._cond.notify_all()
        for job in jobs:
            job._cancelled.set()
            job.finish(TranscriptionCancelled(f"{job.input.name}: the server is stopping"))
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _release(self, ticket: Ticket) -> None:
        if ticket.held:
            ticket.held = False
            self._admitted -= 1

    def _retry_after_s(self) -> int:
        """Seconds until the queued and running audio is decoded, at the real-time factor so far (at least 1)."""
        audio_s = sum(j.audio_s for j in (*self._queue, *self._decoding))
        return max(1, math.ceil(audio_s * self.metrics.rtf()))

    # -- the decoding thread's side --------------------------------------------------
    def _run(self) -> None:
        while True:
            jobs = self._take_round()
            if jobs is None:
                return
            try:
                self._decode_round(jobs)
            finally:
                with self._cond:
                    self._decoding = []

    def _take_round(self) -> list[Job] | None:
        """The next round: the first queued request and every other with its options, after ``batch_wait_s``."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            deadline = time.monotonic() + self.batch_wait_s
            while len(self._queue) < self.max_batch_files and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopping:
                return None
            if not self._queue:  # every waiting request was cancelled meanwhile
                return []
            first = self._queue[0].options
            jobs = [j for j in self._queue if j.options == first][: self.max_batch_files]
            for job in jobs:
                self._queue.remove(job)
                self._release(job.ticket)
            self._decoding = jobs
            return jobs

    def _decode_round(self, jobs: list[Job]) -> None:
        """Transcribe ``jobs`` together (shortest first, so that their results come soonest) and hand out results."""
        if not jobs:
            return
        jobs.sort(key=lambda j: j.audio_s)
        by_input: dict[int, Job] = {id(j.input): j for j in jobs}
        finished: set[int] = set()
        audio_s, start = 0.0, time.perf_counter()

        def on_batch(pairs: list[tuple[Any, Segment]]) -> None:
            self.metrics.batch(len(pairs))
            for source, segment in pairs:
                by_input[id(source)].publish(segment)

        def cancelled(source: Any) -> bool:
            return self._stopping or by_input[id(source)].cancelled

        outcome: BaseException = TranscriptionCancelled("cancelled")
        try:
            inputs = (j.input for j in jobs if not j.cancelled)
            for result in self.transcriber.transcribe_many(inputs, jobs[0].options, on_batch=on_batch,
                                                           cancelled=cancelled):
                finished.add(id(result.source))
                audio_s += result.transcription.duration if result.ok else 0.0
                by_input[id(result.source)].finish(result)
        except AsrS2SError as exc:  # options this model cannot decode with (a scorer it lacks, ...)
            outcome = exc
        except Exception:  # noqa: BLE001 - a bug must fail its requests, not the server; the log keeps the traceback
            log.exception("decoding failed for %s", ", ".join(j.input.name for j in jobs))
            outcome = InternalError("decoding failed on the server; its log says why")
        for job in jobs:
            if id(job.input) not in finished:
                job.finish(outcome)
        self.metrics.round(len(jobs), audio_s, time.perf_counter() - start)
