"""asr-s2s: a plugin-based Listen, Attend and Spell speech recognition toolkit."""

__version__ = "0.1.0"
