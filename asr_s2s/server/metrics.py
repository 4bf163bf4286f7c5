"""The server's counters, as Prometheus text (``GET /metrics``, exposition format 0.0.4).

Request counts by route and status; the queue (length, capacity, requests being decoded); decoding rounds
(a round transcribes the requests taken from the queue together), padded model batches and the requests per
round; audio seconds decoded, decoding seconds and their ratio, the real-time factor; cancelled requests.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTES = ("/", "/app.js", "/health", "/metrics", "/v1/models", "/v1/audio/transcriptions")
ROUND_SIZES = (1, 2, 4, 8, 16, 32, 64)  # histogram buckets of requests per round


@dataclass(frozen=True)
class QueueState:
    length: int  # admitted requests waiting for the decoder (uploading, checked, or queued)
    capacity: int
    decoding: int  # requests in the round being decoded
    pending_audio_s: float  # audio seconds of the queued requests


class Metrics:
    """Thread-safe counters: the event loop counts requests, the decoding thread rounds and batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.rounds = 0
        self.round_sizes: Counter[int] = Counter()  # bucket upper bound -> rounds of at most that many requests
        self.round_requests = 0
        self.batches = 0
        self.segments = 0
        self.audio_s = 0.0
        self.decode_s = 0.0
        self.last_rtf = 0.0
        self.cancelled = 0

    def request(self, route: str, status: int) -> None:
        with self._lock:
            self.requests[(route if route in ROUTES else "other", status)] += 1

    def batch(self, segments: int) -> None:
        with self._lock:
            self.batches += 1
            self.segments += segments

    def round(self, requests: int, audio_s: float, seconds: float) -> None:
        with self._lock:
            self.rounds += 1
            self.round_requests += requests
            for bound in ROUND_SIZES:
                if requests <= bound:
                    self.round_sizes[bound] += 1
            self.audio_s += audio_s
            self.decode_s += seconds
            if audio_s > 0:
                self.last_rtf = seconds / audio_s

    def cancel(self) -> None:
        with self._lock:
            self.cancelled += 1

    def rtf(self, default: float = 0.05) -> float:
        """Decoding seconds per audio second so far (``default`` before anything was decoded)."""
        with self._lock:
            return self.decode_s / self.audio_s if self.audio_s > 0 else default

    def count(self, route: str, status: int | None = None) -> int:
        """Requests to ``route`` answered with ``status`` (any status when None)."""
        with self._lock:
            return sum(n for (r, s), n in self.requests.items() if r == route and status in (None, s))

    def render(self, queue: QueueState) -> str:
        """Every metric, in Prometheus' text exposition format."""
        with self._lock:
            lines = _metric("asr_s2s_requests_total", "counter", "HTTP requests answered, by route and status",
                            [(f'route="{r}",status="{s}"', n) for (r, s), n in sorted(self.requests.items())])
            lines += _metric("asr_s2s_queue_length", "gauge", "requests admitted and waiting for the decoder",
                             [("", queue.length)])
            lines += _metric("asr_s2s_queue_capacity", "gauge", "most requests that may wait (--queue-size)",
                             [("", queue.capacity)])
            lines += _metric("asr_s2s_queued_audio_seconds", "gauge", "audio seconds of the queued requests",
                             [("", round(queue.pending_audio_s, 3))])
            lines += _metric("asr_s2s_requests_decoding", "gauge", "requests in the round being decoded",
                             [("", queue.decoding)])
            lines += _metric("asr_s2s_decode_rounds_total", "counter",
                             "decoding rounds (the requests taken from the queue at once, decoded together)",
                             [("", self.rounds)])
            lines += _histogram("asr_s2s_round_requests", "requests per decoding round", self.round_sizes,
                                self.rounds, self.round_requests)
            lines += _metric("asr_s2s_decode_batches_total", "counter",
                             "padded batches the model decoded (segments of all the round's requests)",
                             [("", self.batches)])
            lines += _metric("asr_s2s_segments_total", "counter", "segments decoded", [("", self.segments)])
            lines += _metric("asr_s2s_audio_seconds_total", "counter", "audio seconds transcribed",
                             [("", round(self.audio_s, 3))])
            lines += _metric("asr_s2s_decode_seconds_total", "counter", "wall seconds spent decoding rounds",
                             [("", round(self.decode_s, 3))])
            rtf = self.decode_s / self.audio_s if self.audio_s > 0 else 0.0
            lines += _metric("asr_s2s_real_time_factor", "gauge",
                             "decoding seconds per audio second: all rounds so far (window=all), the last round "
                             "(window=last)", [('window="all"', round(rtf, 5)), ('window="last"', round(self.last_rtf, 5))])
            lines += _metric("asr_s2s_requests_cancelled_total", "counter",
                             "requests whose client went away before the end; their decoding stopped",
                             [("", self.cancelled)])
        return "\n".join(lines) + "\n"


def _metric(name: str, kind: str, help: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
    return lines + [f"{name}{{{labels}}} {value}" if labels else f"{name} {value}" for labels, value in samples]


def _histogram(name: str, help: str, buckets: Counter[int], count: int, total: float) -> list[str]:
    lines = [f"# HELP {name} {help}", f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{le="{bound}"}} {buckets[bound]}' for bound in ROUND_SIZES]
    return lines + [f'{name}_bucket{{le="+Inf"}} {count}', f"{name}_sum {total}", f"{name}_count {count}"]


def parse(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of Prometheus text (for tests and the load script)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
