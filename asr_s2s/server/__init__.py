"""``asr-s2s serve``: an OpenAI-compatible transcription server over the same :class:`~asr_s2s.transcriber.Transcriber`
the command line uses, with a page to try it.

It adds transport, never a second decoding path:

- :mod:`~asr_s2s.server.app`: the routes (``POST /v1/audio/transcriptions``, ``GET /v1/models``, ``/health``,
  ``/metrics``, the page at ``/``), the API key, limits and errors;
- :mod:`~asr_s2s.server.upload`: the multipart upload, streamed into a temporary folder under a size limit;
- :mod:`~asr_s2s.server.fields`: the form fields of a transcription request, checked;
- :mod:`~asr_s2s.server.batcher`: the bounded queue and the one decoding thread that transcribes the queued
  requests together (their segments share padded batches);
- :mod:`~asr_s2s.server.openai_schema`: responses and errors in OpenAI's shapes (json, text, srt, vtt,
  verbose_json, server-sent events);
- :mod:`~asr_s2s.server.metrics`: request counts, queue length and real-time factor as Prometheus text;
- ``page/``: the page (plain HTML and JavaScript, no build step).

Starlette, uvicorn and python-multipart come with the ``serve`` extra (``pip install 'asr-s2s[serve]'``).
"""

from __future__ import annotations

from dataclasses import dataclass

from asr_s2s.errors import ConfigError

SERVE_PACKAGES = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}
INSTALL_HINT = ("pip install 'asr-s2s[serve]' (from a checkout: pip install -e '.[serve]', or "
                "bash tools/setup.sh --dev, which installs it with the test tools)")


@dataclass(frozen=True)
class ServerSettings:
    """The server's limits. Sizes in bytes, times in seconds."""

    max_upload_bytes: int = 100 * 1024 * 1024  # one uploaded file; larger: 413
    max_duration_s: float = 3600.0  # decoded audio; longer: 413
    queue_size: int = 32  # requests admitted and not yet being decoded; more: 503 with Retry-After
    batch_wait_s: float = 0.01  # how long the decoder waits for more requests before it starts a round
    max_batch_files: int = 64  # requests decoded together in one round at most
    api_key: str | None = None  # when set, /v1/ needs 'Authorization: Bearer KEY'
    upload_dir: str | None = None  # where each request's temporary folder is made (None: the system's, $TMPDIR)

    def __post_init__(self) -> None:
        checks = (("max_upload_bytes", self.max_upload_bytes > 0), ("max_duration_s", self.max_duration_s > 0),
                  ("queue_size", self.queue_size >= 1), ("batch_wait_s", self.batch_wait_s >= 0),
                  ("max_batch_files", self.max_batch_files >= 1))
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"server setting {name} must be positive, got {getattr(self, name)!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty; give a key, or none for a server without one")


def require_server_packages() -> None:
    """Refuse to start, saying how to install them, when the ``serve`` extra's packages are missing.

    :raises ConfigError: naming the missing packages and the install command.
    """
    import importlib.util

    missing = [dist for module, dist in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"'asr-s2s serve' needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}")
