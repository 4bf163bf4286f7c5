"""The built-in asr-s2s components, installed as ``asr_s2s_plugins``.

Each module is an ordinary pluggy plugin listed under the ``asr_s2s``
entry-point group in ``pyproject.toml``, exactly as a third-party package would be.
"""
