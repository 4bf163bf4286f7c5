"""asr-s2s: a plugin-based Listen, Attend and Spell speech recognition toolkit.

``asr_s2s.load_model(path)`` returns a :class:`~asr_s2s.transcriber.Transcriber`;
the names below are imported on first use, so ``import asr_s2s`` stays fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": "asr_s2s.transcriber",
    "Transcriber": "asr_s2s.transcriber",
    "TranscribeOptions": "asr_s2s.transcription",
    "Transcription": "asr_s2s.transcription",
    "Segment": "asr_s2s.transcription",
    "Word": "asr_s2s.transcription",
    "AudioInput": "asr_s2s.transcription",
    "FileResult": "asr_s2s.transcription",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'asr_s2s' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
