"""The language model's text on disk: encoded once into flat token files, read back one window at a time.

``train-lm`` never holds its text in memory (``librispeech-lm-norm.txt`` is 4.3 GB). One pass over the
text files normalises each line like the transcripts and writes, into ``EXP_DIR/text_cache/KEY/``:

- ``train.tokens``: the token ids of every training sentence, back to back, without ``<sos>``/``<eos>``
  (uint8 for token lists of up to 256 entries, else uint16; ``numpy.memmap`` reads it as it is);
- ``train.offsets``: int64, where each sentence starts in ``train.tokens``, and the end (sentences + 1);
- ``valid.tokens``, ``valid.offsets``: the same for the validation sentences;
- ``meta.json``: the counts, the dtype and what the files were made from.

The folder is built under a temporary name and renamed into place, so it exists only whole. KEY hashes
the sha256 and size of every text file, the token list and the held-out split: another text, token list,
``valid_fraction`` or ``seed`` makes another folder (the old ones are removed), the same ones reuse it.

Encoding (and, without ``--valid-text``, holding out ``valid_fraction`` of the text) is
:mod:`asr_s2s.lm_encode`; batching is :mod:`asr_s2s.lm_batches`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from asr_s2s.errors import ManifestError
from asr_s2s.files import default_mode, fsync_directory, write_text_atomically
from asr_s2s.lm_encode import SPLIT_BLOCK, encode_texts
from asr_s2s.tokenizer import CharTokenizer

log = logging.getLogger(__name__)

FORMAT = 1  # of the cache folder; a new format makes new keys
CACHE_DIR = "text_cache"
SOURCES_FILE = "text_sources.json"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class TextSource:
    """One text file as it was read: what ``text_sources.json`` and the log record."""

    role: str  # "train" (--text) or "valid" (--valid-text)
    path: str
    bytes: int
    sha256: str


def describe_sources(train: Sequence[str | os.PathLike], valid: Sequence[str | os.PathLike] = ()) -> list[TextSource]:
    """Size and sha256 of every text file (read once, 1 MiB at a time).

    :raises ManifestError: for an unreadable file.
    """
    sources = []
    for role, paths in (("train", train), ("valid", valid)):
        for path in paths:
            digest, size = hashlib.sha256(), 0
            try:
                with open(path, "rb") as handle:
                    while block := handle.read(_HASH_CHUNK):
                        digest.update(block)
                        size += len(block)
            except OSError as exc:
                raise ManifestError(f"{path}: cannot read text file: {exc.strerror}") from None
            sources.append(TextSource(role, str(Path(path).resolve()), size, digest.hexdigest()))
            log.info("LM %s text %s: %d bytes, sha256 %s", role, path, size, digest.hexdigest())
    return sources


def cache_key(sources: Sequence[TextSource], tokens: Sequence[str], split: tuple[float, int] | None) -> str:
    """What the token files are made of: the texts (by content), the token list and the held-out split."""
    what = {"format": FORMAT, "texts": [(s.role, s.sha256, s.bytes) for s in sources], "tokens": list(tokens),
            "split": None if split is None else [split[0], split[1], SPLIT_BLOCK]}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:20]


# -- reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenStream:
    """Sentences of token ids: the ``NAME.tokens``/``NAME.offsets`` pair of a cache folder, or arrays in memory."""

    sentences: int
    tokens: int
    dtype: str
    prefix: Path | None = None  # .../NAME, for the files
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # (tokens, offsets) when in memory

    @classmethod
    def from_sentences(cls, sentences: Sequence[Sequence[int]]) -> TokenStream:
        """An in-memory stream (small texts, tests)."""
        offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sentences], out=offsets[1:])
        tokens = np.fromiter((t for s in sentences for t in s), dtype=np.int64, count=int(offsets[-1]))
        return cls(len(sentences), int(offsets[-1]), "int64", arrays=(tokens, offsets))

    def offsets(self, first: int, last: int) -> np.ndarray:
        """Where sentences ``first`` .. ``last - 1`` start, and where the last one ends (``last - first + 1`` numbers)."""
        if self.arrays is not None:
            return self.arrays[1][first:last + 1]
        return np.fromfile(f"{self.prefix}.offsets", dtype=np.int64, count=last - first + 1, offset=8 * first)

    def read(self, start: int, end: int) -> np.ndarray:
        """Tokens ``start`` .. ``end - 1`` of the stream (read from disk: only these are held in memory)."""
        if self.arrays is not None:
            return self.arrays[0][start:end]
        size = np.dtype(self.dtype).itemsize
        return np.fromfile(f"{self.prefix}.tokens", dtype=self.dtype, count=end - start, offset=size * start)


@dataclass(frozen=True)
class LMData:
    """The encoded training and validation text of a run, and the key of its cache folder."""

    train: TokenStream
    valid: TokenStream
    key: str
    folder: Path


def open_cache(folder: Path) -> LMData | None:
    """The streams of a complete cache folder, or None where there is none."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT:
        return None
    streams = {name: TokenStream(meta[name]["sentences"], meta[name]["tokens"], meta["dtype"], folder / name)
               for name in ("train", "valid")}
    return LMData(streams["train"], streams["valid"], meta["key"], folder)


def prepare_lm_data(sources: Sequence[TextSource], tokenizer: CharTokenizer, split: tuple[float, int] | None,
                    exp_dir: Path, progress: bool = False) -> LMData:
    """The token files of ``sources`` under ``EXP_DIR/text_cache/KEY``: reused when complete, else written whole.

    :param split: ``(valid_fraction, seed)`` to hold out part of the training text; None when there is a
        validation text.
    """
    key = cache_key(sources, tokenizer.tokens, split)
    root = exp_dir / CACHE_DIR
    folder = root / key
    data = open_cache(folder)
    if data is not None:
        log.info("LM text: reusing the encoded text in %s", folder)
        return data
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        counts = encode_texts([s.path for s in sources if s.role == "train"],
                              [s.path for s in sources if s.role == "valid"], tokenizer, split, tmp, progress)
        meta = {"format": FORMAT, "key": key, **counts, "tokens_list": tokenizer.tokens,
                "split": None if split is None else {"valid_fraction": split[0], "seed": split[1], "block": SPLIT_BLOCK},
                "sources": [asdict(s) for s in sources]}
        write_text_atomically(tmp / "meta.json", json.dumps(meta, indent=1) + "\n")
        os.chmod(tmp, default_mode(directory=True))
        os.replace(tmp, folder)
        fsync_directory(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for other in root.iterdir():  # encodings of other texts, and folders a killed run left half-written
        if other != folder and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
    log.info("LM text: encoded into %s", folder)
    return open_cache(folder)


def record_sources(exp_dir: Path, sources: Sequence[TextSource], data: LMData) -> Path:
    """``EXP_DIR/text_sources.json``: each text file's path, size and sha256, and what was made of them."""
    record = {"sources": [asdict(s) for s in sources], "cache": str(data.folder), "key": data.key,
              "train": {"sentences": data.train.sentences, "tokens": data.train.tokens},
              "valid": {"sentences": data.valid.sentences, "tokens": data.valid.tokens}}
    return write_text_atomically(exp_dir / SOURCES_FILE, json.dumps(record, indent=1) + "\n")
