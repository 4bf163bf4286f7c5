#!/usr/bin/env python3
"""Build a small, deterministic synthetic speech corpus in exact LibriSpeech layout.

The corpus is meant for smoke tests, tutorials and CI of the toolkit: it needs no
download, builds one hour of training audio (plus dev/test) in about 20 seconds on an
idle two-core machine, and is byte-identical for a given ``--seed``.

Usage:
    python data/make_mini_librispeech.py --out DIR [--hours 1.0] [--seed 0]
        [--jobs N] [--dev-fraction 0.05] [--test-fraction 0.05]

    # one hour of training audio plus dev/test, into ./corpus/mini_ls
    python data/make_mini_librispeech.py --out corpus/mini_ls
    # a tiny corpus for unit tests
    python data/make_mini_librispeech.py --out /tmp/tiny_ls --hours 0.02

Requirements:
    Debian/Ubuntu packages ``espeak-ng`` (the synthesiser) and ``wordnet-base``
    (the sentences): ``sudo apt-get install espeak-ng wordnet-base``; Python packages
    numpy and soundfile (tqdm is optional, for progress bars).

Sentences:
    The example sentences of WordNet 3.0 (the double-quoted strings after ``|`` in
    the glosses of ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv``).
    They are normalised to LibriSpeech style: upper case A-Z, apostrophes and single
    spaces; hyphens and slashes become spaces; other punctuation is removed; accents
    are stripped; quotes (not contractions or possessives) lose their apostrophes.
    Sentences with digits or other symbols are dropped, as are sentences outside
    3..20 words; duplicates (after normalisation) are removed.
    WordNet is copyright Princeton University and distributed under the permissive,
    BSD-style WordNet 3.0 licence, which allows use, copying, modification and
    redistribution for any purpose provided its copyright notice is kept; the notice
    is copied to ``DIR/WORDNET_LICENSE.txt``. espeak-ng is GPL-3, which does not
    restrict the audio it produces.

Speakers:
    Every English espeak-ng voice (``espeak-ng --voices=en``: en-gb, en-us,
    en-gb-scotland, en-029, ...) crossed with its default voice and every voice
    variant (``espeak-ng --voices=variant``: m1, f3, klatt, ...) is one speaker, e.g.
    ``-v en-gb-scotland+f3``. Skipped: MBROLA voices (``mb/...``; they need the
    separate mbrola program and silently fall back to the default voice without
    it), variants that are not natural speech (whispered, croaking, robotic,
    echo-effect and novelty voices, see ``EXCLUDED_VARIANTS``) and variants whose
    output is identical to the plain voice (checked at start-up). Each speaker has a
    base speaking rate (words/minute) and pitch (espeak-ng ``-p`` units); every
    utterance jitters both around that base.

Splits:
    Sentences are split first: ``--dev-fraction`` and ``--test-fraction`` of them are
    reserved for dev and test, the rest for train, so no sentence occurs in two
    splits. About 15 % of the speakers are held out and used only in dev/test: one
    whole accent (when at least three accents remain for training) plus whole voice
    variants, so held-out voices are new in timbre, not only in accent. Half of the
    dev/test utterances use held-out speakers, half use training speakers.
    ``--hours`` is the training audio duration: training utterances are synthesised
    in a fixed order until their measured duration reaches it. Dev and test get 300
    utterances per training hour each (at least 20, at most 400, at most the number
    of sentences reserved for them).

Output (``DIR``):
    ``{train,dev,test}/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz
    mono 16-bit FLAC), ``<speaker>-<chapter>.trans.txt`` beside them, about 40
    utterances per chapter; ``SPEAKERS.TXT`` in LibriSpeech's format (NAME is the
    espeak-ng voice, SEX the gender espeak-ng lists for the variant); ``SPLITS.json`` (held-out accents, variants and speakers and
    counts per split); ``lm-text.txt`` (the language-model corpus, as LibriSpeech's
    ``librispeech-lm-norm.txt``: every sentence of the training pool, one per line,
    spoken or not; no dev or test sentence is in it); ``lm-glosses.txt`` (more
    language-model text: WordNet's definitions, i.e. the glosses without their
    examples, normalised the same way, one per line, minus any sentence of the dev
    or test pool); ``.build.json`` (the build parameters, written last).
    Re-running with the same parameters on a complete build does nothing; a partial
    build, or one made with other parameters, is deleted and rebuilt.

Determinism:
    All random choices are made up front in the parent process from ``--seed``;
    workers only synthesise, so ``--jobs`` does not change the result. With the same
    espeak-ng version, the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import multiprocessing.pool
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional: fall back to no progress bar.
    tqdm = None

FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")
TRAIN_SPLIT = "train"
EVAL_SPLITS = ("dev", "test")

# Inputs.
ESPEAK_BINARY = "espeak-ng"
WORDNET_PACKAGE = "wordnet-base"
WORDNET_DEFAULT_DIR = Path("/usr/share/wordnet")
WORDNET_DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_LICENSE_FILE = Path("/usr/share/doc/wordnet-base/copyright")
WORDNET_NOTICE = (
    "The transcripts are derived from the example sentences of WordNet 3.0.\n"
    "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.\n"
    "Distributed under the WordNet 3.0 license (below; also at\n"
    "https://wordnet.princeton.edu/license-and-commercial-use).\n"
)

# Sentence selection.
MIN_WORDS_PER_SENTENCE = 3
MAX_WORDS_PER_SENTENCE = 20

# Voices. Variants (file names under espeak-ng-data/voices/!v) that do not sound like
# natural speech; the reason is reported in SPLITS.json.
MBROLA_VOICE_PREFIX = "mb/"
VARIANT_FILE_PREFIX = "!v/"
EXCLUDED_VARIANTS = {
    "whisper": "whispered (voicing 17%)",
    "whisperf": "whispered (voicing 20%)",
    "caleb": "breath only, no voicing (effectively whispered)",
    "croak": "croaking voice",
    "fast": "experimental fast-speech mode, not a voice",
    "Demonic": "novelty effect voice",
    "Tweaky": "novelty voice (third formant doubled)",
    "announcer": "public-address echo effect",
    "UniRobot": "robotic voice with heavy echo",
    "anikaRobot": "robotic voice with heavy echo",
    "RicishayMax": "heavy echo",
    "RicishayMax2": "heavy echo",
    "RicishayMax3": "heavy echo",
    **{f"robosoft{suffix}": "robotic voice with heavy echo" for suffix in ("", *"2345678")},
}
PROBE_TEXT = "the quick brown fox jumps over the lazy dog"
ESPEAK_TIMEOUT_S = 60

# Speakers and prosody (rate in espeak-ng words per minute, pitch in its 0..99 units).
FIRST_SPEAKER_ID = 100
BASE_RATE_RANGE_WPM = (130, 190)
RATE_JITTER_WPM = 10
BASE_PITCH_RANGE = (30, 70)
PITCH_JITTER = 5
ESPEAK_PITCH_RANGE = (0, 99)

# Splits and sizes.
HELD_OUT_SPEAKER_FRACTION = 0.15
MIN_HELD_OUT_SPEAKERS = 2
MIN_TRAIN_ACCENTS_FOR_ACCENT_HOLDOUT = 3
EVAL_UTTERANCES_PER_TRAIN_HOUR = 300
MIN_EVAL_UTTERANCES = 20
MAX_EVAL_UTTERANCES = 400  # keeps per-epoch validation cheap on a 2-core CPU
UTTERANCES_PER_CHAPTER = 40
FIRST_CHAPTER_ID = 1_000
SECONDS_PER_HOUR = 3_600

# Audio.
TARGET_SAMPLE_RATE_HZ = 16_000
SILENCE_PAD_RANGE_MS = (50, 250)
NOISE_FLOOR_DBFS = -60.0
INT16_SCALE = 32_768
RESAMPLER_HALF_LENGTH_PER_RATE = 10  # filter half length in units of max(up, down), as scipy
RESAMPLER_KAISER_BETA = 5.0

# Scheduling of the training synthesis (utterances per batch handed to the pool).
FIRST_TRAIN_BATCH_UTTERANCES = 64
MAX_TRAIN_BATCH_UTTERANCES = 512
TRAIN_BATCH_OVERSHOOT = 1.05

# Files in DIR.
BUILD_FILE = ".build.json"
PARTIAL_MARKER_FILE = ".build.partial.json"
STAGING_DIR = ".staging"
SPEAKERS_FILE = "SPEAKERS.TXT"
SPLITS_FILE = "SPLITS.json"
LM_TEXT_FILE = "lm-text.txt"
GLOSS_TEXT_FILE = "lm-glosses.txt"
LICENSE_FILE = "WORDNET_LICENSE.txt"


class BuildError(Exception):
    """A problem the user can fix; the message says how."""


# --------------------------------------------------------------------------- data types


@dataclasses.dataclass(frozen=True)
class VoiceRow:
    """One row of ``espeak-ng --voices=...``."""

    language: str
    gender: str
    name: str
    file: str


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: one espeak-ng accent with one voice variant."""

    speaker_id: int
    accent: str
    variant: str  # "" for the accent's default voice
    sex: str
    base_rate_wpm: int
    base_pitch: int

    @property
    def voice(self) -> str:
        """The ``espeak-ng -v`` argument, e.g. ``en-gb-scotland+f3``."""
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


@dataclasses.dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to synthesise one utterance; fixed by the parent process."""

    split: str
    index: int  # position in the split's synthesis order
    text: str  # normalised upper-case transcript
    speaker_id: int
    voice: str
    rate_wpm: int
    pitch: int
    lead_silence_ms: int
    trail_silence_ms: int
    noise_seed: int


@dataclasses.dataclass(frozen=True)
class Utterance:
    """A synthesised utterance placed in the LibriSpeech layout."""

    spec: UtteranceSpec
    num_samples: int
    chapter_id: int
    utterance_number: int

    @property
    def utterance_id(self) -> str:
        """LibriSpeech id ``<speaker>-<chapter>-<utt:04d>``."""
        return f"{self.spec.speaker_id}-{self.chapter_id}-{self.utterance_number:04d}"


# --------------------------------------------------------------------------- prerequisites


def require_espeak() -> str:
    """Return the path of the espeak-ng binary, or explain how to install it."""
    path = shutil.which(ESPEAK_BINARY)
    if path is None:
        raise BuildError(
            f"'{ESPEAK_BINARY}' was not found on PATH. Install it with "
            f"'sudo apt-get install espeak-ng' (Debian/Ubuntu) and run again."
        )
    return path


def espeak_version() -> str:
    """Return espeak-ng's version line (recorded in .build.json)."""
    command = [ESPEAK_BINARY, "--version"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()


def find_wordnet_dir() -> Path:
    """Locate WordNet's data files via ``dpkg -L wordnet-base``, else the default path."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", WORDNET_PACKAGE], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        if line.endswith("/" + WORDNET_DATA_FILES[0]):
            return Path(line).parent
    return WORDNET_DEFAULT_DIR


def require_wordnet_files() -> list[Path]:
    """Return the WordNet data files, or explain how to install them."""
    directory = find_wordnet_dir()
    paths = [directory / name for name in WORDNET_DATA_FILES]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise BuildError(
            f"WordNet data files {', '.join(missing)} not found in {directory}. Install them "
            f"with 'sudo apt-get install {WORDNET_PACKAGE}' (Debian/Ubuntu) and run again."
        )
    return paths


# --------------------------------------------------------------------------- sentences

QUOTED_EXAMPLE_RE = re.compile(r'"([^"]*)"')
PARENTHESISED_RE = re.compile(r"\([^()]*\)")
NORMALISED_TEXT_RE = re.compile(r"[A-Z' ]*")
CHARACTER_MAP = str.maketrans(
    {
        **dict.fromkeys("`\u2018\u2019\u201a\u201b\u00b4\u02bc\u2032", "'"),
        **dict.fromkeys("-/\u2010\u2011\u2012\u2013\u2014\u2015", " "),
        **dict.fromkeys(",.;:!?\"()\u201c\u201d\u201e\u2026", None),
    }
)
LEADING_ELISIONS = frozenset(
    "'EM 'TIS 'TWAS 'TWERE 'TWILL 'UN 'N 'TIL 'CAUSE 'BOUT 'ROUND 'NEATH 'TWIXT "
    "'GAINST 'CEPT 'FRAID".split()
)
TRAILING_ELISIONS = frozenset("O' TH' AN' N'".split())


def wordnet_glosses(path: Path) -> Iterator[str]:
    """Yield the glosses (the text after ``|``: definitions and quoted examples) of one data file."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("  "):  # licence header
                continue
            _, separator, gloss = line.partition(" | ")
            if separator:
                yield gloss


def wordnet_examples(path: Path) -> Iterator[str]:
    """Yield the raw example sentences (quoted strings after ``|``) of one data file."""
    for gloss in wordnet_glosses(path):
        yield from QUOTED_EXAMPLE_RE.findall(gloss)


def wordnet_definitions(path: Path) -> Iterator[str]:
    """Yield the raw definitions of one data file: the ``;``-separated parts of each gloss
    that are not quoted examples, without parenthesised asides."""
    for gloss in wordnet_glosses(path):
        for part in QUOTED_EXAMPLE_RE.sub(";", gloss).split(";"):
            part = PARENTHESISED_RE.sub(" ", part).strip()
            if part:
                yield part


def is_kept_trailing_apostrophe(word: str) -> bool:
    """Whether a word's final apostrophe is part of the word (``DOGS'``, ``GOIN'``)."""
    return word.endswith(("S'", "IN'")) or word in TRAILING_ELISIONS


def strip_quote_apostrophes(words: Sequence[str]) -> list[str]:
    """Remove apostrophes used as quotation marks, keeping contractions and possessives.

    A leading apostrophe opens a quote unless the word is an elision like ``'TIS``;
    a trailing apostrophe closes an open quote, and is otherwise kept only for plural
    possessives and elisions (``DOGS'``, ``GOIN'``). Words that are only apostrophes
    are dropped.
    """
    result = []
    quote_open = False
    for word in words:
        if word.startswith("'") and word.rstrip("'") not in LEADING_ELISIONS:
            word = word.lstrip("'")
            quote_open = True
        if word.endswith("'") and (quote_open or not is_kept_trailing_apostrophe(word)):
            word = word.rstrip("'")
            quote_open = False
        if word.strip("'"):
            result.append(word)
    return result


def normalise_sentence(raw: str) -> str | None:
    """Normalise one example sentence to LibriSpeech style, or None to drop it."""
    if any(character.isdigit() for character in raw):
        return None
    text = unicodedata.normalize("NFKD", raw)
    text = "".join(character for character in text if not unicodedata.combining(character))
    text = text.translate(CHARACTER_MAP).upper()
    if not NORMALISED_TEXT_RE.fullmatch(text.replace("\t", " ")):
        return None
    words = strip_quote_apostrophes(text.split())
    if not MIN_WORDS_PER_SENTENCE <= len(words) <= MAX_WORDS_PER_SENTENCE:
        return None
    return " ".join(words)


def load_sentences(paths: Iterable[Path]) -> list[str]:
    """Return the sorted, de-duplicated normalised example sentences of WordNet."""
    normalised = (normalise_sentence(raw) for path in paths for raw in wordnet_examples(path))
    return sorted({sentence for sentence in normalised if sentence})


def load_definitions(paths: Iterable[Path], exclude: Iterable[str]) -> list[str]:
    """Return the sorted, de-duplicated normalised definitions of WordNet, minus ``exclude``."""
    normalised = (normalise_sentence(raw) for path in paths for raw in wordnet_definitions(path))
    return sorted({sentence for sentence in normalised if sentence} - set(exclude))


# --------------------------------------------------------------------------- voices

VOICE_ROW_RE = re.compile(r"^\s*\d+\s+(\S+)\s+(\S+)\s+(\S+)\s+(.+?)\s*((?:\(\S+ \d+\)\s*)*)$")


def list_espeak_voices(selector: str) -> list[VoiceRow]:
    """Parse ``espeak-ng --voices=<selector>`` (file names may contain spaces)."""
    result = subprocess.run(
        [ESPEAK_BINARY, f"--voices={selector}"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(
            f"'{ESPEAK_BINARY} --voices={selector}' failed: {result.stderr.strip()}; "
            f"check the espeak-ng installation."
        )
    rows = []
    for line in result.stdout.splitlines()[1:]:
        match = VOICE_ROW_RE.match(line)
        if match:
            language, age_gender, name, file = match.group(1, 2, 3, 4)
            rows.append(VoiceRow(language, age_gender.rpartition("/")[2], name, file))
    return rows


def english_accents() -> dict[str, str]:
    """Map each English espeak-ng language code (non-MBROLA) to its voice's gender."""
    accents = {}
    for row in list_espeak_voices("en"):
        if row.language.startswith("en") and not row.file.startswith(MBROLA_VOICE_PREFIX):
            accents.setdefault(row.language, row.gender)
    if not accents:
        raise BuildError(
            f"'{ESPEAK_BINARY} --voices=en' lists no English voices; reinstall the "
            f"espeak-ng-data package ('sudo apt-get install --reinstall espeak-ng-data')."
        )
    return dict(sorted(accents.items()))


def voice_variants() -> dict[str, str]:
    """Map each usable voice-variant file name to its gender, minus EXCLUDED_VARIANTS."""
    variants = {}
    for row in list_espeak_voices("variant"):
        if row.file.startswith(VARIANT_FILE_PREFIX):
            variant = row.file[len(VARIANT_FILE_PREFIX):]
            if variant not in EXCLUDED_VARIANTS:
                variants.setdefault(variant, row.gender)
    return dict(sorted(variants.items()))


def probe_voice(voice: str) -> str:
    """Synthesise PROBE_TEXT with ``voice``; return the audio's digest, or "" if it fails."""
    try:
        wav_bytes = run_espeak(voice, rate_wpm=175, pitch=50, text=PROBE_TEXT)
    except BuildError:
        return ""
    return hashlib.sha256(wav_bytes).hexdigest()


def working_voices(
    accents: Sequence[str], variants: Sequence[str], pool: multiprocessing.pool.Pool
) -> tuple[list[str], list[str], dict[str, str]]:
    """Drop accents that fail and variants that fail or sound like the plain voice.

    Returns the working accents, the working variants and, for each dropped voice,
    the reason.
    """
    reference = accents[0]
    probes = [*accents, *(f"{reference}+{variant}" for variant in variants)]
    digests = dict(zip(probes, pool.map(probe_voice, probes)))
    dropped = {}
    for accent in accents:
        if not digests[accent]:
            dropped[accent] = "espeak-ng failed or produced no audio"
    for variant in variants:
        digest = digests[f"{reference}+{variant}"]
        if not digest:
            dropped[variant] = "espeak-ng failed or produced no audio"
        elif digest == digests[reference]:
            dropped[variant] = f"output identical to the plain '{reference}' voice"
    kept_accents = [accent for accent in accents if accent not in dropped]
    if not kept_accents:
        raise BuildError(
            f"No English espeak-ng voice produced audio; try '{ESPEAK_BINARY} -v en-us hello' "
            f"to see why, and reinstall espeak-ng if it fails."
        )
    kept_variants = [variant for variant in variants if variant not in dropped]
    return kept_accents, kept_variants, dropped


def uniform_int(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    """Draw an integer uniformly from the closed interval ``bounds``."""
    return int(rng.integers(bounds[0], bounds[1] + 1))


def make_speakers(
    accents: dict[str, str], variants: dict[str, str], rng: np.random.Generator
) -> list[Speaker]:
    """Create one speaker per (accent, variant) pair, including each default voice."""
    speakers = []
    pairs = itertools.product(accents, ["", *variants])
    for speaker_id, (accent, variant) in enumerate(pairs, start=FIRST_SPEAKER_ID):
        gender = variants[variant] if variant else accents[accent]
        speakers.append(
            Speaker(
                speaker_id=speaker_id,
                accent=accent,
                variant=variant,
                sex=gender if gender in ("M", "F") else "U",
                base_rate_wpm=uniform_int(rng, BASE_RATE_RANGE_WPM),
                base_pitch=uniform_int(rng, BASE_PITCH_RANGE),
            )
        )
    return speakers


# --------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Speakers used only in dev/test, and the accents/variants that define them."""

    accents: list[str]
    variants: list[str]
    speaker_ids: frozenset[int]


def choose_held_out(speakers: Sequence[Speaker], rng: np.random.Generator) -> HeldOut:
    """Hold out ~15 % of the speakers: one whole accent (if enough remain) plus whole variants."""
    target = max(MIN_HELD_OUT_SPEAKERS, math.ceil(HELD_OUT_SPEAKER_FRACTION * len(speakers)))
    if len(speakers) <= target:
        raise BuildError(
            f"Only {len(speakers)} espeak-ng voices are usable, too few to hold out "
            f"{target} for dev/test; install the full espeak-ng-data package."
        )
    accents = sorted({speaker.accent for speaker in speakers})
    variants = sorted({speaker.variant for speaker in speakers})
    held_accents = []
    if len(accents) - 1 >= MIN_TRAIN_ACCENTS_FOR_ACCENT_HOLDOUT:
        held_accents.append(accents[int(rng.integers(len(accents)))])
    held = {speaker.speaker_id for speaker in speakers if speaker.accent in held_accents}
    held_variants = []
    for position in rng.permutation(len(variants)):
        if len(held) >= target:
            break
        variant = variants[int(position)]
        held_variants.append(variant)
        held |= {speaker.speaker_id for speaker in speakers if speaker.variant == variant}
    if len(held) >= len(speakers):
        raise BuildError("Holding out voices left no training speakers; too few espeak-ng voices.")
    return HeldOut(held_accents, held_variants, frozenset(held))


def partition_sentences(
    sentences: Sequence[str], dev_fraction: float, test_fraction: float, rng: np.random.Generator
) -> dict[str, list[str]]:
    """Shuffle the sentences and give each split a disjoint share."""
    order = [sentences[int(i)] for i in rng.permutation(len(sentences))]
    num_dev = max(1, round(dev_fraction * len(order)))
    num_test = max(1, round(test_fraction * len(order)))
    if num_dev + num_test >= len(order):
        raise BuildError(
            f"Only {len(order)} sentences: none left for training; lower --dev-fraction and "
            f"--test-fraction."
        )
    return {
        "dev": order[:num_dev],
        "test": order[num_dev : num_dev + num_test],
        "train": order[num_dev + num_test :],
    }


def eval_utterance_count(hours: float, pool_size: int) -> int:
    """Number of dev (or test) utterances for a given training duration."""
    wanted = round(EVAL_UTTERANCES_PER_TRAIN_HOUR * hours)
    return min(pool_size, max(MIN_EVAL_UTTERANCES, min(MAX_EVAL_UTTERANCES, wanted)))


class SpeakerCycle:
    """Round-robin over speakers in a random order, reshuffled after every pass."""

    def __init__(self, speakers: Sequence[Speaker], rng: np.random.Generator):
        self._speakers = list(speakers)
        self._rng = rng
        self._queue: list[Speaker] = []

    def next(self) -> Speaker:
        """Return the next speaker, starting a new shuffled pass when needed."""
        if not self._queue:
            order = self._rng.permutation(len(self._speakers))
            self._queue = [self._speakers[int(i)] for i in order[::-1]]
        return self._queue.pop()


def make_spec(
    split: str, index: int, text: str, speaker: Speaker, rng: np.random.Generator
) -> UtteranceSpec:
    """Draw the per-utterance prosody, padding and noise seed."""
    pitch = speaker.base_pitch + uniform_int(rng, (-PITCH_JITTER, PITCH_JITTER))
    return UtteranceSpec(
        split=split,
        index=index,
        text=text,
        speaker_id=speaker.speaker_id,
        voice=speaker.voice,
        rate_wpm=speaker.base_rate_wpm + uniform_int(rng, (-RATE_JITTER_WPM, RATE_JITTER_WPM)),
        pitch=min(max(pitch, ESPEAK_PITCH_RANGE[0]), ESPEAK_PITCH_RANGE[1]),
        lead_silence_ms=uniform_int(rng, SILENCE_PAD_RANGE_MS),
        trail_silence_ms=uniform_int(rng, SILENCE_PAD_RANGE_MS),
        noise_seed=int(rng.integers(2**63)),
    )


def plan_eval_split(
    split: str,
    sentences: Sequence[str],
    count: int,
    held_out_speakers: Sequence[Speaker],
    train_speakers: Sequence[Speaker],
    rng: np.random.Generator,
) -> list[UtteranceSpec]:
    """Plan a dev/test split: alternate held-out and training speakers."""
    cycles = (SpeakerCycle(held_out_speakers, rng), SpeakerCycle(train_speakers, rng))
    return [
        make_spec(split, index, sentences[index], cycles[index % 2].next(), rng)
        for index in range(count)
    ]


def plan_train_split(
    sentences: Sequence[str], train_speakers: Sequence[Speaker], rng: np.random.Generator
) -> Iterator[UtteranceSpec]:
    """Plan training utterances endlessly; the caller stops at the hours budget.

    The first pass uses every training sentence once; should the budget exceed it,
    further passes reuse the sentences in a new order with new voices.
    """
    cycle = SpeakerCycle(train_speakers, rng)
    index = 0
    for pass_number in itertools.count():
        order = range(len(sentences)) if pass_number == 0 else rng.permutation(len(sentences))
        for position in order:
            yield make_spec(TRAIN_SPLIT, index, sentences[int(position)], cycle.next(), rng)
            index += 1


# --------------------------------------------------------------------------- audio


def run_espeak(voice: str, rate_wpm: int, pitch: int, text: str) -> bytes:
    """Synthesise ``text`` with espeak-ng and return the WAV file's bytes."""
    command = [ESPEAK_BINARY, "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "--stdout"]
    try:
        result = subprocess.run(
            command,
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=ESPEAK_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"'{' '.join(command)}' failed: {error}") from error
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", errors="replace").strip()
        raise BuildError(f"'{' '.join(command)}' failed (exit {result.returncode}): {message}")
    return result.stdout


@functools.lru_cache(maxsize=4)
def polyphase_filter_bank(up: int, down: int) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc low-pass for ``up/down`` resampling, split into phases.

    Returns ``(bank, delay)``: ``bank[phase, k]`` is tap ``phase + k * up`` of the
    filter (designed like ``scipy.signal.resample_poly``) and ``delay`` its centre.
    """
    max_rate = max(up, down)
    half_length = RESAMPLER_HALF_LENGTH_PER_RATE * max_rate
    offsets = np.arange(-half_length, half_length + 1)
    taps = np.sinc(offsets / max_rate) * np.kaiser(2 * half_length + 1, RESAMPLER_KAISER_BETA)
    taps *= up / taps.sum()
    taps_per_phase = -(-taps.size // up)
    padded = np.zeros(taps_per_phase * up)
    padded[: taps.size] = taps
    return padded.reshape(taps_per_phase, up).T.copy(), half_length


def resample(audio: np.ndarray, source_rate_hz: int, target_rate_hz: int) -> np.ndarray:
    """Polyphase resampling (numpy only); output length ``ceil(len * target / source)``."""
    divisor = math.gcd(source_rate_hz, target_rate_hz)
    up, down = target_rate_hz // divisor, source_rate_hz // divisor
    if up == down:
        return audio.astype(np.float64)
    bank, delay = polyphase_filter_bank(up, down)
    taps_per_phase = bank.shape[1]
    num_out = -(-audio.size * up // down)
    positions = np.arange(num_out) * down + delay  # output centres on the upsampled grid
    phases, inputs = positions % up, positions // up
    padded = np.concatenate(
        [np.zeros(taps_per_phase), audio, np.zeros(max(0, int(inputs[-1]) - audio.size + 1))]
    )
    output = np.zeros(num_out)
    for k in range(taps_per_phase):
        output += bank[phases, k] * padded[inputs - k + taps_per_phase]
    return output


def pad_with_noise(audio: np.ndarray, spec: UtteranceSpec) -> np.ndarray:
    """Add the planned leading/trailing silence and a -60 dBFS noise floor throughout."""
    lead = spec.lead_silence_ms * TARGET_SAMPLE_RATE_HZ // 1000
    trail = spec.trail_silence_ms * TARGET_SAMPLE_RATE_HZ // 1000
    padded = np.concatenate([np.zeros(lead), audio, np.zeros(trail)])
    noise_rms = 10 ** (NOISE_FLOOR_DBFS / 20)
    return padded + np.random.default_rng(spec.noise_seed).normal(0.0, noise_rms, padded.size)


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Convert float audio in [-1, 1) to clipped 16-bit PCM."""
    return np.clip(np.round(audio * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


def synthesize_utterance(job: tuple[UtteranceSpec, str]) -> int:
    """Worker: synthesise one utterance to a 16 kHz FLAC file; return its sample count."""
    spec, path = job
    wav_bytes = run_espeak(spec.voice, spec.rate_wpm, spec.pitch, spec.text.lower())
    audio, source_rate_hz = sf.read(io.BytesIO(wav_bytes), dtype="float64")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = resample(audio, source_rate_hz, TARGET_SAMPLE_RATE_HZ)
    pcm = to_int16(pad_with_noise(audio, spec))
    sf.write(path, pcm, TARGET_SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
    return int(pcm.size)


# --------------------------------------------------------------------------- synthesis


def progress_bar(total: int, description: str, unit: str):
    """A tqdm progress bar on stderr, or a silent stand-in when tqdm is missing."""
    if tqdm is None:
        return _NoProgress()
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True)


class _NoProgress:
    """Stand-in for tqdm with the few methods used here."""

    def update(self, _amount: float = 1) -> None:
        """Ignore progress."""

    def close(self) -> None:
        """Nothing to close."""


def staged_path(staging_dir: Path, spec: UtteranceSpec) -> str:
    """Temporary location of an utterance's audio before it gets its LibriSpeech id."""
    return str(staging_dir / f"{spec.split}-{spec.index:07d}.flac")


def chunk_size(num_jobs: int, num_workers: int) -> int:
    """imap chunk size giving each worker several chunks."""
    return max(1, num_jobs // (num_workers * 8))


def synthesize_eval_split(
    specs: Sequence[UtteranceSpec], staging_dir: Path, pool: multiprocessing.pool.Pool, workers: int
) -> list[tuple[UtteranceSpec, int]]:
    """Synthesise a dev/test split completely."""
    jobs = [(spec, staged_path(staging_dir, spec)) for spec in specs]
    bar = progress_bar(len(jobs), specs[0].split if specs else "", "utt")
    results = []
    num_samples_iter = pool.imap(synthesize_utterance, jobs, chunk_size(len(jobs), workers))
    for spec, num_samples in zip(specs, num_samples_iter):
        results.append((spec, num_samples))
        bar.update()
    bar.close()
    return results


def synthesize_train_split(
    plan: Iterator[UtteranceSpec],
    budget_samples: int,
    staging_dir: Path,
    pool: multiprocessing.pool.Pool,
    workers: int,
) -> list[tuple[UtteranceSpec, int]]:
    """Synthesise training utterances in plan order until their duration reaches the budget.

    Work is handed out in batches sized from the mean duration so far; results are
    taken in order, so the cut-off (and thus the corpus) does not depend on timing.
    """
    bar = progress_bar(math.ceil(budget_samples / TARGET_SAMPLE_RATE_HZ), "train", "s audio")
    results: list[tuple[UtteranceSpec, int]] = []
    total_samples = 0
    shown_seconds = 0
    batch_size = FIRST_TRAIN_BATCH_UTTERANCES
    while total_samples < budget_samples:
        specs = list(itertools.islice(plan, batch_size))
        jobs = [(spec, staged_path(staging_dir, spec)) for spec in specs]
        num_samples_iter = pool.imap(synthesize_utterance, jobs, chunk_size(len(jobs), workers))
        for spec, num_samples in zip(specs, num_samples_iter):
            results.append((spec, num_samples))
            total_samples += num_samples
            seconds = min(total_samples, budget_samples) // TARGET_SAMPLE_RATE_HZ
            bar.update(seconds - shown_seconds)
            shown_seconds = seconds
            if total_samples >= budget_samples:
                break
        mean_samples = total_samples / len(results)
        remaining = (budget_samples - total_samples) / mean_samples
        wanted = math.ceil(remaining * TRAIN_BATCH_OVERSHOOT)
        batch_size = min(MAX_TRAIN_BATCH_UTTERANCES, max(2 * workers, wanted))
    bar.close()
    return results


# --------------------------------------------------------------------------- layout


def split_evenly(items: Sequence, max_chunk: int) -> list[Sequence]:
    """Split ``items`` into the fewest near-equal chunks of at most ``max_chunk``."""
    num_chunks = -(-len(items) // max_chunk)
    bounds = [round(i * len(items) / num_chunks) for i in range(num_chunks + 1)]
    return [items[start:end] for start, end in zip(bounds, bounds[1:])]


def assign_chapters(
    results: Sequence[tuple[UtteranceSpec, int]], first_chapter_id: int
) -> tuple[list[Utterance], int]:
    """Group a split's utterances by speaker into chapters of about 40 utterances.

    Returns the utterances and the next unused chapter id.
    """
    by_speaker: dict[int, list[tuple[UtteranceSpec, int]]] = {}
    for spec, num_samples in results:
        by_speaker.setdefault(spec.speaker_id, []).append((spec, num_samples))
    utterances = []
    chapter_id = first_chapter_id
    for speaker_id in sorted(by_speaker):
        for chapter in split_evenly(by_speaker[speaker_id], UTTERANCES_PER_CHAPTER):
            for number, (spec, num_samples) in enumerate(chapter):
                utterances.append(Utterance(spec, num_samples, chapter_id, number))
            chapter_id += 1
    return utterances, chapter_id


def write_split(utterances: Sequence[Utterance], out_dir: Path, staging_dir: Path) -> None:
    """Move a split's audio into place and write its ``.trans.txt`` files."""
    chapters: dict[Path, list[Utterance]] = {}
    for utterance in utterances:
        speaker_dir = out_dir / utterance.spec.split / str(utterance.spec.speaker_id)
        chapters.setdefault(speaker_dir / str(utterance.chapter_id), []).append(utterance)
    for chapter_dir, members in chapters.items():
        chapter_dir.mkdir(parents=True, exist_ok=True)
        members = sorted(members, key=lambda utterance: utterance.utterance_id)
        for utterance in members:
            target = chapter_dir / f"{utterance.utterance_id}.flac"
            os.replace(staged_path(staging_dir, utterance.spec), target)
        lines = "".join(f"{u.utterance_id} {u.spec.text}\n" for u in members)
        transcript = chapter_dir / f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt"
        transcript.write_text(lines, encoding="utf-8")


def speaker_minutes(layout: dict[str, list[Utterance]]) -> dict[int, dict[str, float]]:
    """Minutes of audio per speaker and split."""
    minutes: dict[int, dict[str, float]] = {}
    for split, utterances in layout.items():
        for utterance in utterances:
            per_split = minutes.setdefault(utterance.spec.speaker_id, {})
            utterance_minutes = utterance.num_samples / TARGET_SAMPLE_RATE_HZ / 60
            per_split[split] = per_split.get(split, 0.0) + utterance_minutes
    return minutes


def write_speakers_file(
    path: Path, speakers: Sequence[Speaker], layout: dict[str, list[Utterance]]
) -> None:
    """Write SPEAKERS.TXT in LibriSpeech's ``ID | SEX | SUBSET | MINUTES | NAME`` format."""
    minutes = speaker_minutes(layout)
    lines = [
        "; Synthetic espeak-ng speakers: one per (English accent, voice variant) pair.\n",
        "; SUBSET lists every split with audio from the speaker; MINUTES is their total.\n",
        "; Speakers held out of training are listed in SPLITS.json.\n",
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n",
    ]
    for speaker in speakers:
        per_split = minutes.get(speaker.speaker_id)
        if per_split:
            subsets = ",".join(split for split in SPLITS if split in per_split)
            lines.append(
                f"{speaker.speaker_id:<5}| {speaker.sex} | {subsets:<16} | "
                f"{sum(per_split.values()):5.2f} | {speaker.voice}\n"
            )
    path.write_text("".join(lines), encoding="utf-8")


def split_summary(utterances: Sequence[Utterance], held_out: HeldOut) -> dict:
    """Counts and duration of one split."""
    speaker_ids = {utterance.spec.speaker_id for utterance in utterances}
    total_samples = sum(utterance.num_samples for utterance in utterances)
    return {
        "utterances": len(utterances),
        "hours": round(total_samples / TARGET_SAMPLE_RATE_HZ / SECONDS_PER_HOUR, 4),
        "speakers": len(speaker_ids),
        "held_out_speakers": len(speaker_ids & held_out.speaker_ids),
        "chapters": len({(u.spec.speaker_id, u.chapter_id) for u in utterances}),
        "distinct_sentences": len({utterance.spec.text for utterance in utterances}),
    }


def check_disjoint_sentences(layout: dict[str, list[Utterance]]) -> None:
    """Fail loudly if a sentence occurs in two splits (would be a bug in this script)."""
    texts = {split: {u.spec.text for u in utterances} for split, utterances in layout.items()}
    for first, second in itertools.combinations(SPLITS, 2):
        shared = texts[first] & texts[second]
        if shared:
            raise AssertionError(f"{len(shared)} sentences occur in both {first} and {second}")


# --------------------------------------------------------------------------- build state


def build_parameters(args: argparse.Namespace) -> dict:
    """The parameters that determine the corpus (not ``--jobs``)."""
    return {
        "format_version": FORMAT_VERSION,
        "hours": args.hours,
        "seed": args.seed,
        "dev_fraction": args.dev_fraction,
        "test_fraction": args.test_fraction,
    }


def read_json(path: Path) -> dict | None:
    """Read a JSON object, or None if the file is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_lm_text(path: Path, sentences: Sequence[str]) -> None:
    """A language-model corpus: ``sentences``, sorted, one per line, written atomically."""
    write_text_atomically(path, "".join(f"{sentence}\n" for sentence in sorted(sentences)))
    print(f"{path}: {len(sentences)} sentences for language-model training.", flush=True)


def write_lm_texts(out_dir: Path, wordnet_files: Sequence[Path], pools: dict[str, list[str]]) -> None:
    """``lm-text.txt`` (the training pool) and ``lm-glosses.txt`` (definitions, no dev/test sentence)."""
    write_lm_text(out_dir / LM_TEXT_FILE, pools[TRAIN_SPLIT])
    held_out = [sentence for split in EVAL_SPLITS for sentence in pools[split]]
    write_lm_text(out_dir / GLOSS_TEXT_FILE, load_definitions(wordnet_files, held_out))


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file and a rename: readers never see half of it."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_json(path: Path, value: dict) -> None:
    """Write JSON atomically."""
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")


def is_complete_build(out_dir: Path, parameters: dict) -> bool:
    """Whether ``out_dir`` holds a finished build with these parameters."""
    build = read_json(out_dir / BUILD_FILE)
    return build is not None and build.get("parameters") == parameters


def prepare_output_dir(out_dir: Path, parameters: dict) -> None:
    """Create ``out_dir`` empty, deleting an earlier (partial or different) build of ours."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise BuildError(f"--out {out_dir} exists and is not a directory; choose another path.")
        ours = (out_dir / BUILD_FILE).exists() or (out_dir / PARTIAL_MARKER_FILE).exists()
        if ours:
            print(f"Removing the partial or differently configured build in {out_dir}.", flush=True)
            shutil.rmtree(out_dir)
        elif any(out_dir.iterdir()):
            raise BuildError(
                f"--out {out_dir} is not empty and holds no build of this script; refusing to "
                f"overwrite it. Choose an empty or new directory."
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / PARTIAL_MARKER_FILE, {"parameters": parameters})


def write_license(out_dir: Path) -> None:
    """Copy WordNet's copyright notice next to the derived transcripts."""
    text = WORDNET_NOTICE
    if WORDNET_LICENSE_FILE.is_file():
        text += "\n" + WORDNET_LICENSE_FILE.read_text(encoding="utf-8", errors="replace")
    (out_dir / LICENSE_FILE).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""

    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    parser = argparse.ArgumentParser(
        prog="make_mini_librispeech.py", description=__doc__, formatter_class=Formatter
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="output directory (created if missing)",
    )
    parser.add_argument(
        "--hours", type=float, default=1.0, metavar="H", help="training audio duration in hours"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed; same seed, same files"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="parallel synthesis processes (does not change the output)",
    )
    for split in EVAL_SPLITS:
        parser.add_argument(
            f"--{split}-fraction",
            type=float,
            default=0.05,
            metavar="F",
            help=f"fraction of the sentences reserved for {split} (0 < f < 0.5)",
        )
    args = parser.parse_args(argv)
    if not args.hours > 0:
        parser.error("--hours must be positive")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    for name in ("dev_fraction", "test_fraction"):
        if not 0 < getattr(args, name) < 0.5:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 0.5")
    return args


def print_summary(
    out_dir: Path, summary: dict, held_out: HeldOut, speakers: Sequence[Speaker]
) -> None:
    """Print the per-split table and the held-out voices to stdout."""
    print(f"\nCorpus written to {out_dir}")
    print(f"{'split':<6} {'utterances':>10} {'hours':>7} {'speakers':>9} {'held-out':>9}")
    for split in SPLITS:
        row = summary[split]
        print(
            f"{split:<6} {row['utterances']:>10} {row['hours']:>7.3f} {row['speakers']:>9} "
            f"{row['held_out_speakers']:>9}"
        )
    train = summary[TRAIN_SPLIT]
    if train["distinct_sentences"] < train["utterances"]:
        print(
            f"Note: --hours exceeds one pass over the training sentences; "
            f"{train['distinct_sentences']} distinct sentences are reused with other voices."
        )
    print(f"Speakers: {len(speakers)} in total, {len(held_out.speaker_ids)} held out of training")
    print(f"Held-out accents (every variant): {', '.join(held_out.accents) or 'none'}")
    variants = [variant or "(default voice)" for variant in held_out.variants]
    print(f"Held-out variants (every accent): {', '.join(variants)}")
    print(f"Details: {out_dir / SPLITS_FILE}, {out_dir / SPEAKERS_FILE}")


def build(args: argparse.Namespace) -> None:
    """Build the corpus described by ``args`` into ``args.out``."""
    out_dir: Path = args.out
    parameters = build_parameters(args)
    lm_texts = (out_dir / LM_TEXT_FILE, out_dir / GLOSS_TEXT_FILE)
    if is_complete_build(out_dir, parameters) and all(path.is_file() for path in lm_texts):
        print(f"{out_dir} already holds a complete build with these parameters; nothing to do.")
        return
    wordnet_files = require_wordnet_files()
    sentences = load_sentences(wordnet_files)
    print(f"Found {len(sentences)} usable WordNet example sentences.", flush=True)
    seeds = np.random.SeedSequence(args.seed).spawn(6)
    speaker_rng, held_out_rng, sentence_rng, *split_rngs = map(np.random.default_rng, seeds)
    if is_complete_build(out_dir, parameters):  # built before the LM texts existed
        pools = partition_sentences(sentences, args.dev_fraction, args.test_fraction, sentence_rng)
        write_lm_texts(out_dir, wordnet_files, pools)
        return
    require_espeak()

    prepare_output_dir(out_dir, parameters)
    staging_dir = out_dir / STAGING_DIR
    staging_dir.mkdir()
    with multiprocessing.Pool(args.jobs) as pool:
        accents, variants = english_accents(), voice_variants()
        kept_accents, kept_variants, dropped = working_voices(list(accents), list(variants), pool)
        speakers = make_speakers(
            {accent: accents[accent] for accent in kept_accents},
            {variant: variants[variant] for variant in kept_variants},
            speaker_rng,
        )
        held_out = choose_held_out(speakers, held_out_rng)
        train_speakers = [s for s in speakers if s.speaker_id not in held_out.speaker_ids]
        held_out_speakers = [s for s in speakers if s.speaker_id in held_out.speaker_ids]
        print(
            f"Voices: {len(kept_accents)} accents x {len(kept_variants) + 1} variants "
            f"= {len(speakers)} speakers ({len(held_out_speakers)} held out of training).",
            flush=True,
        )
        pools = partition_sentences(sentences, args.dev_fraction, args.test_fraction, sentence_rng)
        results = {}
        for split, rng in zip(EVAL_SPLITS, split_rngs):
            count = eval_utterance_count(args.hours, len(pools[split]))
            specs = plan_eval_split(
                split, pools[split], count, held_out_speakers, train_speakers, rng
            )
            results[split] = synthesize_eval_split(specs, staging_dir, pool, args.jobs)
        budget_samples = round(args.hours * SECONDS_PER_HOUR * TARGET_SAMPLE_RATE_HZ)
        train_plan = plan_train_split(pools[TRAIN_SPLIT], train_speakers, split_rngs[-1])
        results[TRAIN_SPLIT] = synthesize_train_split(
            train_plan, budget_samples, staging_dir, pool, args.jobs
        )
    # Leaving the pool terminates it, dropping work queued beyond the training budget.

    layout: dict[str, list[Utterance]] = {}
    next_chapter_id = FIRST_CHAPTER_ID
    for split in SPLITS:
        layout[split], next_chapter_id = assign_chapters(results[split], next_chapter_id)
        write_split(layout[split], out_dir, staging_dir)
    check_disjoint_sentences(layout)
    shutil.rmtree(staging_dir)
    write_lm_texts(out_dir, wordnet_files, pools)

    summary = {split: split_summary(layout[split], held_out) for split in SPLITS}
    write_speakers_file(out_dir / SPEAKERS_FILE, speakers, layout)
    write_license(out_dir)
    write_json(
        out_dir / SPLITS_FILE,
        {
            "seed": args.seed,
            "splits": summary,
            "sentences": {
                "available": len(sentences),
                **{f"{split}_pool": len(pools[split]) for split in SPLITS},
            },
            "speakers": len(speakers),
            "accents": kept_accents,
            "variants": ["", *kept_variants],
            "held_out": {
                "accents": held_out.accents,
                "variants": held_out.variants,
                "speakers": {str(s.speaker_id): s.voice for s in held_out_speakers},
            },
            "excluded_variants": EXCLUDED_VARIANTS,
            "dropped_voices": dropped,
        },
    )
    write_json(out_dir / BUILD_FILE, {"parameters": parameters, "espeak_ng": espeak_version()})
    (out_dir / PARTIAL_MARKER_FILE).unlink()
    print_summary(out_dir, summary, held_out, speakers)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        build(args)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
