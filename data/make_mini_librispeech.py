#!/usr/bin/env python3
"""Build a small, deterministic synthetic speech corpus in exact LibriSpeech layout.

The corpus is meant for smoke tests, tutorials and CI of the toolkit: it needs no
download, is spoken by three families of offline English synthesisers (espeak-ng,
flite and festival), builds one hour of training audio (plus dev/test) in about 30
seconds on an idle two-core machine, and is byte-identical for a given ``--seed``.
One family is held out of training and speaks test splits of its own, so that a
model is also scored on a synthesiser it has never heard.

Usage:
    python data/make_mini_librispeech.py --out DIR [--hours 1.0] [--seed 0]
        [--jobs N] [--dev-fraction 0.05] [--test-fraction 0.05]
        [--held-out-family {espeak-ng,flite,festival,none}]
        [--family-share espeak-ng=0.5,flite=0.5]

    # one hour of training audio plus dev/test, into ./corpus/mini_ls
    python data/make_mini_librispeech.py --out corpus/mini_ls
    # a tiny corpus for unit tests
    python data/make_mini_librispeech.py --out /tmp/tiny_ls --hours 0.02
    # more flite than espeak-ng in training
    python data/make_mini_librispeech.py --out /tmp/ls --family-share espeak-ng=1,flite=2

Requirements:
    Debian/Ubuntu packages ``espeak-ng``, ``flite`` and ``festival`` with the voices
    ``festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts`` (the synthesisers) and
    ``wordnet-base`` (the sentences): ``sudo apt-get install espeak-ng flite festival
    festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts wordnet-base``; Python
    packages numpy and soundfile (tqdm is optional, for progress bars).

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
    is copied to ``DIR/WORDNET_LICENSE.txt``. The synthesisers' licences (GPL-3 for
    espeak-ng, BSD-style for flite and festival and their voices) do not restrict
    the audio they produce.

Synthesiser families and speakers:
    Every speaker has a base speaking rate and pitch; every utterance jitters both
    around that base. The settings that make a speaker are checked at start-up, so
    a voice that ignores one of them is never counted as several speakers.
    espeak-ng: every English voice (``espeak-ng --voices=en``: en-gb, en-us,
        en-gb-scotland, en-029, ...) crossed with its default voice and every voice
        variant (``espeak-ng --voices=variant``: m1, f3, klatt, ...) is one speaker,
        e.g. ``-v en-gb-scotland+f3``. Skipped: MBROLA voices (``mb/...``; they need
        the separate mbrola program and silently fall back to the default voice
        without it), variants that are not natural speech (whispered, croaking,
        robotic, echo-effect and novelty voices, see ``EXCLUDED_VARIANTS``) and
        variants whose output is identical to the plain voice. Rate in words per
        minute (``-s``), pitch in espeak-ng's 0..99 units (``-p``).
    flite: every built-in voice (``flite -lv``: kal, kal16, awb, rms, slt) gives 12
        speakers, except the limited-domain ``awb_time``, which can only say the
        time of day. Rate is a tempo factor relative to the voice's own (``--setf
        duration_stretch=1/tempo``), pitch a shift in semitones (``--setf
        f0_shift=2^(st/12)``, which scales the intonation model's mean F0). The
        clustergen voice rms ignores flite's F0 features (its F0 comes from a
        separate accent model): for such a voice the output is resampled instead,
        which moves the formants with the pitch (so its range is narrower), and
        duration_stretch makes up for the change of tempo. flite runs in-process,
        through its shared library, for every voice whose start-up probes come out
        identical to the flite program's; that saves starting a process per
        utterance (a fifth of a clustergen voice's time).
    festival: every installed English voice (``voice.list``) of a known kind gives 8
        speakers. Diphone voices with the linear-regression intonation model
        (kal_diphone, ked_diphone): tempo via ``Duration_Stretch`` (relative to the
        voice's own), pitch via ``int_lr_params`` (target F0 mean and standard
        deviation scaled by 2^(st/12)). HTS voices (cmu_us_slt_arctic_hts): tempo via
        hts_engine's ``-r``; festival 2.5 passes only ``-m`` and ``-r`` to
        hts_engine (``-fm`` and Duration_Stretch change nothing), so the pitch is
        shifted as ``-fm`` would shift it, by adding to the log-F0 means of a copy
        of the ``.htsvoice`` file. One festival process per chunk of utterances runs
        a generated script (``utt.synth`` and ``utt.save.wave``, never ``SayText``).
    All audio is resampled to 16 kHz (flite's kal speaks at 8 kHz, festival's HTS
    voice at 32 kHz), padded with 50-250 ms of silence at each end and given a
    -60 dBFS noise floor.

Splits:
    Sentences are split first: ``--dev-fraction`` and ``--test-fraction`` of them are
    reserved for dev and test, the rest for train, so no sentence occurs in both
    train and an evaluation split. ``--held-out-family`` (default festival) is never
    heard in train, dev or test; the other families are the training families.
    train: ``--hours`` of audio, shared between the training families by
        ``--family-share`` (a share of the duration; default equal shares, i.e.
        espeak-ng=0.5,flite=0.5), so that flite's few voices are not drowned by
        espeak-ng's hundreds of speakers. The training sentences are dealt to the
        families in proportion to their shares; each family speaks its sentences
        in a fixed order until its share of ``--hours`` is reached (should that
        exceed its sentences, further passes reuse them in a new order).
    dev, test: 300 utterances per training hour each (at least 20, at most 400, at
        most the number of sentences reserved for them). Utterances alternate
        between the training families and, within each family, between speakers
        held out of training and training speakers, so about half are spoken by
        held-out speakers. espeak-ng's held-out speakers (about 15 %) are one whole
        accent (when at least three accents remain for training) plus whole voice
        variants, so they are new in timbre, not only in accent. flite has too few
        voices to hold whole voices out: 2 of the 12 speakers (rate/pitch
        settings) of every voice are held out instead (1 of 8 for festival, should
        it be a training family).
    dev_unseen_tts, test_unseen_tts (not built with ``--held-out-family none``): the
        first utterances of dev and test (the same sentences in the same order, so a
        model's errors can be compared sentence by sentence), spoken by the held-out
        family's speakers in turn. As many utterances as dev and test have, but at
        most 200: festival's HTS voice takes about 0.13 s of CPU per utterance,
        and 400 per split would add about 12 s to a 4.5-hour build on two cores.

Output (``DIR``):
    ``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz mono
    16-bit FLAC) for the splits above, ``<speaker>-<chapter>.trans.txt`` beside them,
    about 40 utterances per chapter; ``SPEAKERS.TXT`` in LibriSpeech's format (NAME
    is the family and voice, e.g. ``espeak-ng:en-gb+f3``, ``flite:slt``,
    ``festival:kal_diphone``; SEX the gender the synthesiser gives the voice);
    ``SPLITS.json`` (families, held-out family, shares, speakers per family, the
    speakers and espeak-ng accents and variants held out of training, counts per
    split and family); ``lm-text.txt`` (the language-model corpus, as LibriSpeech's
    ``librispeech-lm-norm.txt``: every sentence of the training pool, one per line,
    spoken or not; no dev or test sentence is in it); ``lm-glosses.txt`` (more
    language-model text: WordNet's definitions, i.e. the glosses without their
    examples, normalised the same way, one per line, minus any sentence of the dev
    or test pool); ``.build.json`` (the build parameters and the synthesisers'
    versions, written last).
    Re-running with the same parameters on a complete build does nothing; a partial
    build, or one made with other parameters, is deleted and rebuilt.

Determinism:
    All random choices are made up front in the parent process from ``--seed``;
    workers only synthesise, so ``--jobs`` does not change the result. With the same
    synthesiser versions and voices, the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import ctypes
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
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional: fall back to no progress bar.
    tqdm = None

FORMAT_VERSION = 2
TRAIN_SPLIT = "train"
EVAL_SPLITS = ("dev", "test")
UNSEEN_TTS_SUFFIX = "_unseen_tts"
UNSEEN_SPLITS = tuple(f"{split}{UNSEEN_TTS_SUFFIX}" for split in EVAL_SPLITS)
SPLITS = (TRAIN_SPLIT, *EVAL_SPLITS, *UNSEEN_SPLITS)

# Synthesiser families, in speaker-id order, and the Debian packages that provide them.
ESPEAK = "espeak-ng"
FLITE = "flite"
FESTIVAL = "festival"
FAMILIES = (ESPEAK, FLITE, FESTIVAL)
NO_FAMILY = "none"
DEFAULT_HELD_OUT_FAMILY = FESTIVAL
# Relative shares of the training audio, normalised over the training families.
DEFAULT_FAMILY_SHARE = {ESPEAK: 0.5, FLITE: 0.5, FESTIVAL: 0.5}
ESPEAK_BINARY = "espeak-ng"
FLITE_BINARY = "flite"
FESTIVAL_BINARY = "festival"
FESTIVAL_VOICE_PACKAGES = ("festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")
APT_PACKAGES = {
    ESPEAK: ("espeak-ng",),
    FLITE: ("flite",),
    FESTIVAL: ("festival", *FESTIVAL_VOICE_PACKAGES),
}

# Inputs.
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

# espeak-ng voices. Variants (file names under espeak-ng-data/voices/!v) that do not
# sound like natural speech; the reason is reported in SPLITS.json.
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
SHORT_PROBE_TEXT = "a quick test"  # flite and festival: does a setting change the audio?
SYNTH_TIMEOUT_S = 60

# flite voices: the built-in voices are fixed by the Debian package; flite lists no
# gender, so it is given here. Limited-domain voices cannot read arbitrary text.
FLITE_EXCLUDED_VOICES = {
    "awb_time": "limited-domain voice: it can only say the time of day",
}
FLITE_VOICE_SEX = {"kal": "M", "kal16": "M", "awb": "M", "rms": "M", "slt": "F"}
FLITE_SPEAKERS_PER_VOICE = 12
# flite's shared libraries, driven in-process when they give the program's output.
FLITE_LIBRARY = "libflite.so.1"
FLITE_VOICE_LIBRARY = "libflite_cmu_us_{voice}.so.1"
FLITE_VOICE_REGISTER = "register_cmu_us_{voice}"
FLITE_RAND_SEED = 1  # rand()'s state when a process starts

# festival voices: a voice is used when festival can change its rate and pitch.
FESTIVAL_SPEAKERS_PER_VOICE = 8
FESTIVAL_LANGUAGE = "english"
FESTIVAL_VOICE_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
FESTIVAL_STARTUP_TIMEOUT_S = 60
FESTIVAL_TIMEOUT_S_PER_UTTERANCE = 10
FESTIVAL_WORK_DIR_PREFIX = "mini_librispeech_festival_"  # scripts, WAV files, HTS voice copies
HTS_DATA_MARKER = b"[DATA]\n"
LOG_F0_STREAM = "LF0"

# How each kind of voice changes its pitch (Voice.pitch_control).
PITCH_ESPEAK = "espeak -p"
PITCH_FLITE_F0 = "flite f0_shift"
PITCH_RESAMPLE = "resampling"
PITCH_FESTIVAL_LR = "festival int_lr_params"
PITCH_HTS_LOG_F0 = "hts log-F0 means"

# Speakers and prosody. espeak-ng: rate in words per minute, pitch in its 0..99 units.
FIRST_SPEAKER_ID = 100
BASE_RATE_RANGE_WPM = (130, 190)
RATE_JITTER_WPM = 10
BASE_PITCH_RANGE = (30, 70)
PITCH_JITTER = 5
ESPEAK_PITCH_RANGE = (0, 99)
# flite and festival: rate is a tempo factor (1 = the voice's own speed), pitch a
# shift in semitones. Resampling also moves the formants, hence its narrower range.
BASE_TEMPO_RANGE = (0.85, 1.20)
TEMPO_JITTER = 0.05
BASE_SEMITONE_RANGE = (-3.0, 3.0)
RESAMPLED_SEMITONE_RANGE = (-2.0, 2.0)
SEMITONE_JITTER = 0.5
SEMITONES_PER_OCTAVE = 12
RESAMPLE_RATE_STEP_HZ = 100  # pitch by resampling: source rates on this grid

# Splits and sizes.
HELD_OUT_SPEAKER_FRACTION = 0.15
MIN_HELD_OUT_SPEAKERS = 2
MIN_TRAIN_ACCENTS_FOR_ACCENT_HOLDOUT = 3
EVAL_UTTERANCES_PER_TRAIN_HOUR = 300
MIN_EVAL_UTTERANCES = 20
MAX_EVAL_UTTERANCES = 400  # keeps per-epoch validation cheap on a 2-core CPU
MAX_UNSEEN_TTS_UTTERANCES = 200  # festival's HTS voice is slow; see the module docstring
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
RESAMPLER_MAX_COLUMN_LOOPS = 1_000  # up to this many (phase, tap) pairs, loop over both
RESAMPLER_BLOCK_VALUES = 8_192  # else work on blocks of about this many output samples

# Scheduling of the synthesis (utterances per batch handed to the pool).
FIRST_TRAIN_BATCH_UTTERANCES = 64
MAX_TRAIN_BATCH_UTTERANCES = 512
TRAIN_BATCH_OVERSHOOT = 1.05
CHUNKS_PER_WORKER = 8
MIN_FESTIVAL_CHUNK_UTTERANCES = 40  # a festival process takes ~0.2 s to start

# Independent random streams, one per purpose, so that e.g. the held-out family
# does not change the speakers of the others.
RNG_STREAMS = (
    "sentences",
    *EVAL_SPLITS,
    *UNSEEN_SPLITS,
    *(
        f"{purpose}:{family}"
        for family in FAMILIES
        for purpose in ("speakers", "held_out", "train")
    ),
)

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
class Voice:
    """One voice of one synthesiser family, with what is needed to drive it."""

    family: str
    name: str  # espeak-ng: "en-gb-scotland+f3"; flite: "slt"; festival: "kal_diphone"
    sex: str  # "M", "F" or "U"
    pitch_control: str  # one of the PITCH_* constants
    accent: str = ""  # espeak-ng only
    variant: str = ""  # espeak-ng only; "" for the accent's default voice
    sample_rate_hz: int = 0  # flite only: the voice's output rate
    in_process: bool = False  # flite only: synthesised through FliteLibrary, not the program
    duration_stretch: float = 1.0  # festival only: the voice's own Duration_Stretch
    f0_params: tuple[float, ...] = ()  # festival int_lr_params: target mean, std, model mean, std
    model_file: str = ""  # festival HTS only: the .htsvoice file

    @property
    def label(self) -> str:
        """``family:voice``, the NAME in SPEAKERS.TXT."""
        return f"{self.family}:{self.name}"


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a voice with its own base rate and pitch."""

    speaker_id: int
    voice: Voice
    base_rate: float  # espeak-ng: words per minute; flite/festival: tempo factor
    base_pitch: float  # espeak-ng: -p units; flite/festival: semitones

    @property
    def family(self) -> str:
        """The synthesiser family."""
        return self.voice.family


@dataclasses.dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to synthesise one utterance; fixed by the parent process."""

    split: str
    index: int  # position in the split's (or, for train, the family's) synthesis order
    text: str  # normalised upper-case transcript
    speaker_id: int
    voice: Voice
    rate: float  # as Speaker.base_rate
    pitch: float  # as Speaker.base_pitch
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


def require_binary(binary: str, family: str) -> str:
    """Return the path of a synthesiser's program, or explain how to install it."""
    path = shutil.which(binary)
    if path is None:
        packages = " ".join(APT_PACKAGES[family])
        raise BuildError(
            f"'{binary}' ({family}) was not found on PATH. Install it with "
            f"'sudo apt-get install {packages}' (Debian/Ubuntu) and run again."
        )
    return path


def require_synthesisers(families: Iterable[str]) -> None:
    """Check that every family's program is installed."""
    binaries = {ESPEAK: ESPEAK_BINARY, FLITE: FLITE_BINARY, FESTIVAL: FESTIVAL_BINARY}
    for family in families:
        require_binary(binaries[family], family)


def command_output(command: Sequence[str]) -> str:
    """stdout and stderr of a short command, or "" if it cannot run."""
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=SYNTH_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (result.stdout + result.stderr).strip()


def synthesiser_versions(families: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each family's version line and Debian package versions (recorded in .build.json)."""
    version_commands = {
        ESPEAK: [ESPEAK_BINARY, "--version"],
        FLITE: [FLITE_BINARY, "--version"],
        FESTIVAL: [FESTIVAL_BINARY, "--version"],
    }
    versions = {}
    for family in families:
        lines = command_output(version_commands[family]).splitlines()
        # flite prints a copyright line first, then "version: ..."
        line = next(
            (line for line in lines if "version" in line.lower()), lines[0] if lines else ""
        )
        packages = {package: dpkg_version(package) for package in APT_PACKAGES[family]}
        versions[family] = {"version": line.strip(), "packages": packages}
    return versions


def dpkg_version(package: str) -> str:
    """The installed Debian package's version, or "" (not installed, or no dpkg)."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


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


# --------------------------------------------------------------------------- voices: espeak-ng

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
    """Synthesise PROBE_TEXT with an espeak-ng voice; return the audio's digest, or "" if it fails."""
    try:
        wav_bytes = run_espeak(voice, rate_wpm=175, pitch=50, text=PROBE_TEXT)
    except BuildError:
        return ""
    return hashlib.sha256(wav_bytes).hexdigest()


def espeak_probe_voices(accents: Sequence[str], variants: Sequence[str]) -> list[str]:
    """The voices to probe: every accent, and every variant of the first accent."""
    return [*accents, *(f"{accents[0]}+{variant}" for variant in variants)]


def working_voices(
    accents: Sequence[str], variants: Sequence[str], digests: dict[str, str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """Drop accents that fail and variants that fail or sound like the plain voice,
    given the ``probe_voice`` digests of ``espeak_probe_voices``.

    Returns the working accents, the working variants and, for each dropped voice,
    the reason.
    """
    reference = accents[0]
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


def espeak_voices(
    accents: dict[str, str], variants: dict[str, str], digests: dict[str, str]
) -> tuple[list[Voice], dict[str, str]]:
    """Every working (accent, variant) pair, the accent's default voice included, and
    the reasons for the dropped ones."""
    kept_accents, kept_variants, dropped = working_voices(list(accents), list(variants), digests)
    voices = []
    for accent, variant in itertools.product(kept_accents, ["", *kept_variants]):
        gender = variants[variant] if variant else accents[accent]
        voices.append(
            Voice(
                family=ESPEAK,
                name=f"{accent}+{variant}" if variant else accent,
                sex=gender if gender in ("M", "F") else "U",
                pitch_control=PITCH_ESPEAK,
                accent=accent,
                variant=variant,
            )
        )
    return voices, dropped


# --------------------------------------------------------------------------- voices: flite

# Probes of each flite voice: its own settings, a slower tempo and a higher pitch.
FLITE_PROBE_TEMPO = 0.8
FLITE_PROBE_SEMITONES = 3.0


def list_flite_voices() -> list[str]:
    """The voices built into flite (``flite -lv``: ``Voices available: kal ...``)."""
    output = command_output([FLITE_BINARY, "-lv"])
    _, separator, names = output.partition(":")
    if not separator or not names.split():
        raise BuildError(
            f"'{FLITE_BINARY} -lv' lists no voices ({output!r}); reinstall flite with "
            f"'sudo apt-get install --reinstall {' '.join(APT_PACKAGES[FLITE])}'."
        )
    return names.split()


def probe_flite_voice(name: str, in_process: bool = False) -> dict:
    """Synthesise SHORT_PROBE_TEXT plainly, slower and higher with the flite program (or
    FliteLibrary); the audio's digests and sample rate, or an error."""
    voice = Voice(FLITE, name, "U", PITCH_FLITE_F0, in_process=in_process)
    settings = {
        "plain": (1.0, 0.0),
        "tempo": (FLITE_PROBE_TEMPO, 0.0),
        "pitch": (1.0, FLITE_PROBE_SEMITONES),
    }
    probe = {}
    for kind, (tempo, semitones) in settings.items():
        spec = UtteranceSpec(
            "probe", 0, SHORT_PROBE_TEXT.upper(), 0, voice, tempo, semitones, 0, 0, 0
        )
        try:
            audio, rate_hz = flite_audio(spec)
        except (BuildError, OSError, AttributeError) as error:
            return {"error": str(error)}
        if audio.size == 0:
            return {"error": "flite produced no audio"}
        probe[kind] = hashlib.sha256(audio.tobytes()).hexdigest()
        probe["sample_rate_hz"] = rate_hz
    return probe


def flite_voices(
    names: Sequence[str], probes: Sequence[dict], library_probes: Sequence[dict]
) -> tuple[list[Voice], dict[str, str]]:
    """The usable flite voices, each with how its pitch is changed, and the dropped ones.

    A voice whose output does not change with ``duration_stretch`` is dropped (it
    would give identical speakers); one whose output does not change with
    ``f0_shift`` gets its pitch by resampling. A voice is synthesised in-process
    when FliteLibrary gave the program's audio for every probe.
    """
    voices, dropped = [], {}
    for name, probe, library_probe in zip(names, probes, library_probes):
        if "error" in probe:
            dropped[name] = probe["error"]
        elif probe["tempo"] == probe["plain"]:
            dropped[name] = "ignores duration_stretch, so its speakers could not differ in rate"
        else:
            control = PITCH_FLITE_F0 if probe["pitch"] != probe["plain"] else PITCH_RESAMPLE
            sex = FLITE_VOICE_SEX.get(name, "U")
            rate_hz, in_process = probe["sample_rate_hz"], library_probe == probe
            voices.append(
                Voice(FLITE, name, sex, control, sample_rate_hz=rate_hz, in_process=in_process)
            )
    if not voices:
        raise BuildError(
            f"No flite voice produced usable audio ({dropped}); try '{FLITE_BINARY} -t hello' "
            f"and reinstall flite ('sudo apt-get install --reinstall flite')."
        )
    return voices, dropped


# --------------------------------------------------------------------------- voices: festival

# Prints one tab-separated line per installed voice: name, language, gender, synthesis
# method, intonation target method, Duration_Stretch, int_lr_params (target mean, std,
# model mean, std) and, for HTS voices, the .htsvoice file.
FESTIVAL_DESCRIBE_SCRIPT = r"""
(define (asr_s2s_param alist key)
  (let ((entry (assoc key alist))) (if entry (cadr entry) "")))
(define (asr_s2s_describe voice)
  (let ((info (cadr (voice.description voice))))
    (voice.select voice)
    (format t "VOICE\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n"
      voice (asr_s2s_param info 'language) (asr_s2s_param info 'gender)
      (Parameter.get 'Synth_Method)
      (if (equal? (Parameter.get 'Int_Target_Method) Int_Targets_LR) "Int_Targets_LR" "other")
      (Parameter.get 'Duration_Stretch)
      (asr_s2s_param int_lr_params 'target_f0_mean) (asr_s2s_param int_lr_params 'target_f0_std)
      (asr_s2s_param int_lr_params 'model_f0_mean) (asr_s2s_param int_lr_params 'model_f0_std)
      (if (string-equal (Parameter.get 'Synth_Method) "HTS")
          (asr_s2s_param hts_engine_params "-m") ""))))
(mapcar
  (lambda (voice)
    (unwind-protect (asr_s2s_describe voice) (format t "FAILED\t%s\n" voice)))
  (voice.list))
"""
FESTIVAL_DIPHONE_METHODS = ("UniSyn", "Diphone")  # waveform synthesis that follows target F0
FESTIVAL_HTS_METHOD = "HTS"
FESTIVAL_PROBE_TEMPO = 0.8
FESTIVAL_PROBE_SEMITONES = 3.0


def describe_festival_voices(work_dir: Path) -> tuple[list[Voice], dict[str, str]]:
    """The installed English festival voices whose rate and pitch can be set, and the
    reasons for the others (before any synthesis)."""
    script = work_dir / "describe.scm"
    script.write_text(FESTIVAL_DESCRIBE_SCRIPT, encoding="utf-8")
    output = run_festival_script(script, FESTIVAL_STARTUP_TIMEOUT_S)
    voices, dropped = [], {}
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "FAILED" and len(fields) == 2:
            dropped[fields[1]] = "festival failed to load the voice"
        if fields[0] != "VOICE" or len(fields) != 12:
            continue
        name, language, gender, method, int_method, stretch, *f0_fields, model_file = fields[1:]
        sex = {"male": "M", "female": "F"}.get(gender, "U")
        if language != FESTIVAL_LANGUAGE:
            dropped[name] = f"not English ({language or 'no language given'})"
        elif not FESTIVAL_VOICE_NAME_RE.match(name):
            dropped[name] = "unexpected characters in the voice name"
        elif method == FESTIVAL_HTS_METHOD:
            problem = htsvoice_problem(model_file)
            if problem:
                dropped[name] = problem
            else:
                voices.append(Voice(FESTIVAL, name, sex, PITCH_HTS_LOG_F0, model_file=model_file))
        elif method in FESTIVAL_DIPHONE_METHODS and int_method == "Int_Targets_LR":
            try:
                f0_params = tuple(float(value) for value in f0_fields)
                duration_stretch = float(stretch)
            except ValueError:
                dropped[name] = f"incomplete int_lr_params {f0_fields}"
                continue
            voices.append(
                Voice(
                    FESTIVAL,
                    name,
                    sex,
                    PITCH_FESTIVAL_LR,
                    duration_stretch=duration_stretch,
                    f0_params=f0_params,
                )
            )
        else:
            dropped[name] = (
                f"no known rate and pitch control for synthesis method {method} with "
                f"intonation targets {int_method}"
            )
    return voices, dropped


def festival_probe_specs(voice: Voice) -> list[UtteranceSpec]:
    """Plain, slower and higher probes of one festival voice."""
    settings = ((1.0, 0.0), (FESTIVAL_PROBE_TEMPO, 0.0), (1.0, FESTIVAL_PROBE_SEMITONES))
    return [
        UtteranceSpec("probe", 0, SHORT_PROBE_TEXT.upper(), 0, voice, tempo, semitones, 0, 0, 0)
        for tempo, semitones in settings
    ]


def festival_voices(work_root: str) -> tuple[list[Voice], dict[str, str]]:
    """Describe the festival voices, then keep those whose output changes with both
    rate and pitch (runs in a worker; its files go under ``work_root``)."""
    with tempfile.TemporaryDirectory(dir=work_root) as work_dir:
        candidates, dropped = describe_festival_voices(Path(work_dir))
        specs = [spec for voice in candidates for spec in festival_probe_specs(voice)]
        audio = festival_audio(specs, Path(work_dir)) if specs else []
    voices = []
    for position, voice in enumerate(candidates):
        plain, slower, higher = (
            hashlib.sha256(samples.tobytes()).hexdigest()
            for samples, _ in audio[3 * position : 3 * position + 3]
        )
        if plain == slower:
            dropped[voice.name] = "output does not change with its rate setting"
        elif plain == higher:
            dropped[voice.name] = (
                f"output does not change with its pitch setting ({voice.pitch_control})"
            )
        else:
            voices.append(voice)
    if not voices:
        raise BuildError(
            f"No usable English festival voice ({dropped or 'none installed'}). Install "
            f"'sudo apt-get install {' '.join(APT_PACKAGES[FESTIVAL])}' and run again."
        )
    return sorted(voices, key=lambda voice: voice.name), dropped


def find_voices(
    pool: multiprocessing.pool.Pool, work_root: str
) -> tuple[dict[str, list[Voice]], dict[str, dict[str, str]]]:
    """Every family's usable voices and dropped voices; the probes run in ``pool``
    (festival's files under ``work_root``)."""
    accents, variants = english_accents(), voice_variants()
    espeak_names = espeak_probe_voices(list(accents), list(variants))
    espeak_result = pool.map_async(probe_voice, espeak_names)
    festival_result = pool.apply_async(festival_voices, (work_root,))
    flite_names = [name for name in list_flite_voices() if name not in FLITE_EXCLUDED_VOICES]
    flite_result = pool.map_async(probe_flite_voice, flite_names)
    # Meanwhile, check here (not in a worker, where a crash would hang the pool)
    # that flite's library gives the program's audio.
    library_probes = [probe_flite_voice(name, in_process=True) for name in flite_names]
    voices, dropped = {}, {}
    digests = dict(zip(espeak_names, espeak_result.get()))
    voices[ESPEAK], dropped[ESPEAK] = espeak_voices(accents, variants, digests)
    voices[FLITE], dropped[FLITE] = flite_voices(flite_names, flite_result.get(), library_probes)
    voices[FESTIVAL], dropped[FESTIVAL] = festival_result.get()
    return voices, dropped


# --------------------------------------------------------------------------- speakers

SPEAKERS_PER_VOICE = {FLITE: FLITE_SPEAKERS_PER_VOICE, FESTIVAL: FESTIVAL_SPEAKERS_PER_VOICE}


def uniform_int(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    """Draw an integer uniformly from the closed interval ``bounds``."""
    return int(rng.integers(bounds[0], bounds[1] + 1))


def semitone_range(voice: Voice) -> tuple[float, float]:
    """The range of a flite or festival speaker's base pitch, in semitones."""
    return (
        RESAMPLED_SEMITONE_RANGE if voice.pitch_control == PITCH_RESAMPLE else BASE_SEMITONE_RANGE
    )


def make_family_speakers(
    family: str, voices: Sequence[Voice], first_speaker_id: int, rng: np.random.Generator
) -> list[Speaker]:
    """espeak-ng: one speaker per voice; flite and festival: SPEAKERS_PER_VOICE each."""
    speakers = []
    for voice in voices:
        for _ in range(SPEAKERS_PER_VOICE.get(family, 1)):
            if family == ESPEAK:
                base_rate = uniform_int(rng, BASE_RATE_RANGE_WPM)
                base_pitch = uniform_int(rng, BASE_PITCH_RANGE)
            else:
                base_rate = round(float(rng.uniform(*BASE_TEMPO_RANGE)), 3)
                base_pitch = round(float(rng.uniform(*semitone_range(voice))), 2)
            speaker_id = first_speaker_id + len(speakers)
            speakers.append(Speaker(speaker_id, voice, base_rate, base_pitch))
    return speakers


def make_speakers(
    voices: dict[str, Sequence[Voice]], rngs: dict[str, np.random.Generator]
) -> list[Speaker]:
    """Every family's speakers, with ids unique across families (in FAMILIES order)."""
    speakers: list[Speaker] = []
    for family in FAMILIES:
        first_id = FIRST_SPEAKER_ID + len(speakers)
        speakers += make_family_speakers(
            family, voices.get(family, ()), first_id, rngs[f"speakers:{family}"]
        )
    return speakers


# --------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The held-out family, and the speakers of the training families used only in
    dev/test (with the espeak-ng accents and variants that define espeak-ng's)."""

    family: str | None
    speaker_ids: frozenset[int]
    accents: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()


def held_out_target(num_speakers: int) -> int:
    """How many of a family's speakers to hold out of training."""
    return max(MIN_HELD_OUT_SPEAKERS, math.ceil(HELD_OUT_SPEAKER_FRACTION * num_speakers))


def choose_held_out_espeak(
    speakers: Sequence[Speaker], rng: np.random.Generator
) -> tuple[list[str], list[str], set[int]]:
    """Hold out ~15 % of the espeak-ng speakers: one whole accent (if enough remain)
    plus whole variants. Returns the accents, the variants and the speaker ids."""
    target = held_out_target(len(speakers))
    if len(speakers) <= target:
        raise BuildError(
            f"Only {len(speakers)} espeak-ng voices are usable, too few to hold out "
            f"{target} for dev/test; install the full espeak-ng-data package."
        )
    accents = sorted({speaker.voice.accent for speaker in speakers})
    variants = sorted({speaker.voice.variant for speaker in speakers})
    held_accents = []
    if len(accents) - 1 >= MIN_TRAIN_ACCENTS_FOR_ACCENT_HOLDOUT:
        held_accents.append(accents[int(rng.integers(len(accents)))])
    held = {speaker.speaker_id for speaker in speakers if speaker.voice.accent in held_accents}
    held_variants = []
    for position in rng.permutation(len(variants)):
        if len(held) >= target:
            break
        variant = variants[int(position)]
        held_variants.append(variant)
        held |= {speaker.speaker_id for speaker in speakers if speaker.voice.variant == variant}
    if len(held) >= len(speakers):
        raise BuildError("Holding out voices left no training speakers; too few espeak-ng voices.")
    return held_accents, held_variants, held


def held_out_per_voice(speakers_per_voice: int) -> int:
    """Speakers (rate/pitch settings) of each flite or festival voice held out of training."""
    wanted = max(1, round(HELD_OUT_SPEAKER_FRACTION * speakers_per_voice))
    return min(wanted, speakers_per_voice - 1)


def choose_held_out_settings(speakers: Sequence[Speaker], rng: np.random.Generator) -> set[int]:
    """Hold out some speakers of every voice (not whole voices: there are too few)."""
    by_voice: dict[str, list[Speaker]] = {}
    for speaker in speakers:
        by_voice.setdefault(speaker.voice.name, []).append(speaker)
    held = set()
    for members in by_voice.values():
        count = held_out_per_voice(len(members))
        for position in rng.permutation(len(members))[:count]:
            held.add(members[int(position)].speaker_id)
    return held


def choose_held_out(
    speakers: Sequence[Speaker],
    training_families: Sequence[str],
    held_out_family: str | None,
    rngs: dict[str, np.random.Generator],
) -> HeldOut:
    """Pick the speakers of each training family that only speak in dev/test."""
    held: set[int] = set()
    accents: list[str] = []
    variants: list[str] = []
    for family in training_families:
        members = [speaker for speaker in speakers if speaker.family == family]
        rng = rngs[f"held_out:{family}"]
        if family == ESPEAK:
            accents, variants, family_held = choose_held_out_espeak(members, rng)
        else:
            family_held = choose_held_out_settings(members, rng)
        if not family_held or len(family_held) >= len(members):
            raise BuildError(
                f"{family} has {len(members)} speakers: too few to hold some out of training."
            )
        held |= family_held
    return HeldOut(held_out_family, frozenset(held), tuple(accents), tuple(variants))


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


def deal_sentences(sentences: Sequence[str], shares: dict[str, float]) -> dict[str, list[str]]:
    """Deal the training sentences to the families in proportion to their shares,
    interleaved, keeping their order."""
    dealt: dict[str, list[str]] = {family: [] for family in shares}
    for position, sentence in enumerate(sentences, start=1):
        family = max(shares, key=lambda name: shares[name] * position - len(dealt[name]))
        dealt[family].append(sentence)
    empty = [family for family, members in dealt.items() if not members]
    if empty:
        raise BuildError(
            f"Too few training sentences for {', '.join(empty)}; raise its --family-share."
        )
    return dealt


def eval_utterance_count(hours: float, pool_size: int) -> int:
    """Number of dev (or test) utterances for a given training duration."""
    wanted = round(EVAL_UTTERANCES_PER_TRAIN_HOUR * hours)
    return min(pool_size, max(MIN_EVAL_UTTERANCES, min(MAX_EVAL_UTTERANCES, wanted)))


def unseen_utterance_count(eval_count: int) -> int:
    """Number of utterances of an unseen-synthesiser split whose clean split has ``eval_count``."""
    return min(eval_count, MAX_UNSEEN_TTS_UTTERANCES)


def family_budgets(hours: float, shares: dict[str, float]) -> dict[str, int]:
    """Each training family's share of the training audio, in samples."""
    total = hours * SECONDS_PER_HOUR * TARGET_SAMPLE_RATE_HZ
    return {family: round(total * share) for family, share in shares.items()}


class SpeakerCycle:
    """Round-robin over speakers in a random order, reshuffled after every pass."""

    def __init__(self, speakers: Sequence[Speaker], rng: np.random.Generator):
        if not speakers:
            raise BuildError("No speakers to plan with (a bug, or every voice was dropped).")
        self._speakers = list(speakers)
        self._rng = rng
        self._queue: list[Speaker] = []

    def next(self) -> Speaker:
        """Return the next speaker, starting a new shuffled pass when needed."""
        if not self._queue:
            order = self._rng.permutation(len(self._speakers))
            self._queue = [self._speakers[int(i)] for i in order[::-1]]
        return self._queue.pop()


def draw_prosody(speaker: Speaker, rng: np.random.Generator) -> tuple[float, float]:
    """An utterance's rate and pitch: the speaker's base, jittered."""
    if speaker.family == ESPEAK:
        pitch = speaker.base_pitch + uniform_int(rng, (-PITCH_JITTER, PITCH_JITTER))
        rate = speaker.base_rate + uniform_int(rng, (-RATE_JITTER_WPM, RATE_JITTER_WPM))
        return rate, min(max(pitch, ESPEAK_PITCH_RANGE[0]), ESPEAK_PITCH_RANGE[1])
    tempo = round(speaker.base_rate + float(rng.uniform(-TEMPO_JITTER, TEMPO_JITTER)), 3)
    semitones = round(speaker.base_pitch + float(rng.uniform(-SEMITONE_JITTER, SEMITONE_JITTER)), 2)
    return tempo, semitones


def make_spec(
    split: str, index: int, text: str, speaker: Speaker, rng: np.random.Generator
) -> UtteranceSpec:
    """Draw the per-utterance prosody, padding and noise seed."""
    rate, pitch = draw_prosody(speaker, rng)
    return UtteranceSpec(
        split=split,
        index=index,
        text=text,
        speaker_id=speaker.speaker_id,
        voice=speaker.voice,
        rate=rate,
        pitch=pitch,
        lead_silence_ms=uniform_int(rng, SILENCE_PAD_RANGE_MS),
        trail_silence_ms=uniform_int(rng, SILENCE_PAD_RANGE_MS),
        noise_seed=int(rng.integers(2**63)),
    )


def plan_eval_split(
    split: str,
    sentences: Sequence[str],
    count: int,
    families: Sequence[str],
    speakers: Sequence[Speaker],
    held_out: HeldOut,
    rng: np.random.Generator,
) -> list[UtteranceSpec]:
    """Plan a dev/test split: utterance ``i`` is spoken by family ``i mod F``, and each
    family alternates between held-out and training speakers."""
    cycles = {}
    for family in families:
        members = [speaker for speaker in speakers if speaker.family == family]
        held = [speaker for speaker in members if speaker.speaker_id in held_out.speaker_ids]
        seen = [speaker for speaker in members if speaker.speaker_id not in held_out.speaker_ids]
        cycles[family] = (SpeakerCycle(held, rng), SpeakerCycle(seen, rng))
    specs = []
    for index in range(count):
        turn, position = divmod(index, len(families))
        speaker = cycles[families[position]][turn % 2].next()
        specs.append(make_spec(split, index, sentences[index], speaker, rng))
    return specs


def plan_unseen_split(
    split: str,
    source: Sequence[UtteranceSpec],
    count: int,
    speakers: Sequence[Speaker],
    rng: np.random.Generator,
) -> list[UtteranceSpec]:
    """Plan an unseen-synthesiser split: the first ``count`` sentences of ``source``, in
    order, spoken by the held-out family's ``speakers`` in turn."""
    cycle = SpeakerCycle(speakers, rng)
    return [
        make_spec(split, index, source[index].text, cycle.next(), rng) for index in range(count)
    ]


def plan_train_split(
    sentences: Sequence[str], train_speakers: Sequence[Speaker], rng: np.random.Generator
) -> Iterator[UtteranceSpec]:
    """Plan one family's training utterances endlessly; the caller stops at its budget.

    The first pass uses every one of the family's sentences once; should the budget
    exceed it, further passes reuse the sentences in a new order with new voices.
    """
    cycle = SpeakerCycle(train_speakers, rng)
    index = 0
    for pass_number in itertools.count():
        order = range(len(sentences)) if pass_number == 0 else rng.permutation(len(sentences))
        for position in order:
            yield make_spec(TRAIN_SPLIT, index, sentences[int(position)], cycle.next(), rng)
            index += 1


def make_rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per purpose (RNG_STREAMS), all from ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(RNG_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(RNG_STREAMS, children)}


def training_families(held_out_family: str | None) -> list[str]:
    """The families heard in training, in FAMILIES order."""
    return [family for family in FAMILIES if family != held_out_family]


@dataclasses.dataclass
class CorpusPlan:
    """Every choice of a build, made before any synthesis."""

    speakers: list[Speaker]
    training_families: list[str]
    held_out: HeldOut
    family_share: dict[str, float]
    pools: dict[str, list[str]]  # sentences of train, dev, test
    train_sentences: dict[str, list[str]]  # the training pool, dealt to the families
    eval_specs: dict[str, list[UtteranceSpec]]  # dev, test and the unseen-synthesiser splits
    train_plans: dict[str, Iterator[UtteranceSpec]]  # per training family, endless
    train_budgets: dict[str, int]  # per training family, in samples

    @property
    def splits(self) -> list[str]:
        """The splits this build writes."""
        return [TRAIN_SPLIT, *self.eval_specs]


def plan_corpus(
    voices: dict[str, Sequence[Voice]],
    sentences: Sequence[str],
    args: argparse.Namespace,
    rngs: dict[str, np.random.Generator] | None = None,
) -> CorpusPlan:
    """Make every random choice of the build described by ``args`` (see parse_args)."""
    rngs = rngs if rngs is not None else make_rngs(args.seed)
    held_out_family = None if args.held_out_family == NO_FAMILY else args.held_out_family
    families = training_families(held_out_family)
    speakers = make_speakers(voices, rngs)
    held_out = choose_held_out(speakers, families, held_out_family, rngs)
    pools = partition_sentences(sentences, args.dev_fraction, args.test_fraction, rngs["sentences"])
    eval_specs: dict[str, list[UtteranceSpec]] = {}
    for split in EVAL_SPLITS:
        count = eval_utterance_count(args.hours, len(pools[split]))
        eval_specs[split] = plan_eval_split(
            split, pools[split], count, families, speakers, held_out, rngs[split]
        )
    if held_out_family is not None:
        unseen_speakers = [speaker for speaker in speakers if speaker.family == held_out_family]
        for split in EVAL_SPLITS:
            unseen = f"{split}{UNSEEN_TTS_SUFFIX}"
            count = unseen_utterance_count(len(eval_specs[split]))
            eval_specs[unseen] = plan_unseen_split(
                unseen, eval_specs[split], count, unseen_speakers, rngs[unseen]
            )
    train_sentences = deal_sentences(pools[TRAIN_SPLIT], args.family_share)
    train_plans = {}
    for family in families:
        train_speakers = [
            speaker
            for speaker in speakers
            if speaker.family == family and speaker.speaker_id not in held_out.speaker_ids
        ]
        train_plans[family] = plan_train_split(
            train_sentences[family], train_speakers, rngs[f"train:{family}"]
        )
    return CorpusPlan(
        speakers=speakers,
        training_families=families,
        held_out=held_out,
        family_share=dict(args.family_share),
        pools=pools,
        train_sentences=train_sentences,
        eval_specs=eval_specs,
        train_plans=train_plans,
        train_budgets=family_budgets(args.hours, args.family_share),
    )


# --------------------------------------------------------------------------- synthesisers


def run_synthesiser(command: Sequence[str], stdin: bytes | None = None) -> bytes:
    """Run a synthesiser that writes a WAV file to stdout; return the file's bytes."""
    try:
        result = subprocess.run(
            command, input=stdin, capture_output=True, timeout=SYNTH_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"'{' '.join(command)}' failed: {error}") from error
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", errors="replace").strip()
        raise BuildError(f"'{' '.join(command)}' failed (exit {result.returncode}): {message}")
    return result.stdout


def read_wav(data: bytes | str) -> tuple[np.ndarray, int]:
    """Decode a WAV file (bytes or path) to mono float64 samples and the sample rate."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    audio, rate_hz = sf.read(source, dtype="float64")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return audio, int(rate_hz)


def run_espeak(voice: str, rate_wpm: int, pitch: int, text: str) -> bytes:
    """Synthesise ``text`` with espeak-ng and return the WAV file's bytes."""
    command = [ESPEAK_BINARY, "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "--stdout"]
    return run_synthesiser(command, stdin=text.encode("utf-8"))


def espeak_audio(spec: UtteranceSpec) -> tuple[np.ndarray, int]:
    """One espeak-ng utterance: samples and their rate."""
    return read_wav(run_espeak(spec.voice.name, int(spec.rate), int(spec.pitch), spec.text.lower()))


def semitone_factor(semitones: float) -> float:
    """Frequency ratio of a pitch shift."""
    return 2.0 ** (semitones / SEMITONES_PER_OCTAVE)


def resampled_source_rate(sample_rate_hz: int, semitones: float) -> int:
    """Pitch by resampling: the rate the audio is read at (on a grid, so that the
    resampler's filters stay small). Reading it faster raises pitch and formants."""
    rate = sample_rate_hz * semitone_factor(semitones) / RESAMPLE_RATE_STEP_HZ
    return round(rate) * RESAMPLE_RATE_STEP_HZ


def flite_features(spec: UtteranceSpec) -> list[tuple[str, str]]:
    """flite features (``--setf NAME=VALUE``) for an utterance's tempo and pitch."""
    voice = spec.voice
    if voice.pitch_control == PITCH_RESAMPLE:
        # Resampling speeds the audio up by ``factor``: stretch it by as much first.
        factor = resampled_source_rate(voice.sample_rate_hz, spec.pitch) / voice.sample_rate_hz
        return [("duration_stretch", f"{factor / spec.rate:.4f}")]
    return [
        ("duration_stretch", f"{1 / spec.rate:.4f}"),
        ("f0_shift", f"{semitone_factor(spec.pitch):.4f}"),
    ]


class _CstWave(ctypes.Structure):
    """flite's ``cst_wave``."""

    _fields_ = [
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.POINTER(ctypes.c_short)),
    ]


class FliteLibrary:
    """flite's shared libraries driven through ctypes, as the flite program drives them.

    Starting a flite process takes about a fifth of a clustergen voice's time per
    utterance; this skips it. Features are set on the voice before every utterance
    and rand() is reseeded as in a new process, so that an utterance's audio does not
    depend on the ones before it. find_voices uses it only for voices whose probes
    come out identical to the program's.
    """

    def __init__(self) -> None:
        self._flite = ctypes.CDLL(FLITE_LIBRARY)
        self._libc = ctypes.CDLL(None)
        self._flite.flite_feat_set_float.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_float,
        ]
        self._flite.flite_text_to_wave.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        self._flite.flite_text_to_wave.restype = ctypes.POINTER(_CstWave)
        self._flite.delete_wave.argtypes = [ctypes.POINTER(_CstWave)]
        self._flite.flite_init()
        self._voices: dict[str, int] = {}
        # flite keeps pointers to feature names rather than copies: keep them alive.
        self._names: dict[str, bytes] = {}

    def _voice(self, name: str) -> int:
        """The registered ``cst_voice`` pointer of a built-in voice."""
        if name not in self._voices:
            library = ctypes.CDLL(FLITE_VOICE_LIBRARY.format(voice=name))
            register = getattr(library, FLITE_VOICE_REGISTER.format(voice=name))
            register.argtypes, register.restype = [ctypes.c_char_p], ctypes.c_void_p
            pointer = register(None)
            if not pointer:
                raise OSError(f"flite did not register voice {name}")
            self._voices[name] = pointer
        return self._voices[name]

    def synthesize(
        self, name: str, text: str, features: Sequence[tuple[str, str]]
    ) -> tuple[np.ndarray, int]:
        """Samples (float, as read from the program's WAV file) and their rate."""
        voice = self._voice(name)
        voice_features = ctypes.cast(voice, ctypes.POINTER(ctypes.c_void_p))[
            1
        ]  # cst_voice.features
        for feature, value in features:
            name_bytes = self._names.setdefault(feature, feature.encode())
            self._flite.flite_feat_set_float(voice_features, name_bytes, float(value))
        self._libc.srand(FLITE_RAND_SEED)
        wave = self._flite.flite_text_to_wave(text.encode(), voice)
        if not wave:
            raise BuildError(f"flite's library synthesised nothing for {text!r} ({name})")
        try:
            count = wave.contents.num_samples * wave.contents.num_channels
            samples = (
                np.ctypeslib.as_array(wave.contents.samples, (count,)) if count else np.zeros(0)
            )
            audio = samples.reshape(-1, wave.contents.num_channels).mean(axis=1) / INT16_SCALE
            return audio, int(wave.contents.sample_rate)
        finally:
            self._flite.delete_wave(wave)


@functools.lru_cache(maxsize=1)
def flite_library() -> FliteLibrary:
    """This process's FliteLibrary, loaded on first use."""
    return FliteLibrary()


def flite_audio(spec: UtteranceSpec) -> tuple[np.ndarray, int]:
    """One flite utterance: samples and the rate to read them at."""
    features = flite_features(spec)
    if spec.voice.in_process:
        audio, rate_hz = flite_library().synthesize(spec.voice.name, spec.text.lower(), features)
    else:
        command = [FLITE_BINARY, "-voice", spec.voice.name]
        for feature, value in features:
            command += ["--setf", f"{feature}={value}"]
        command += ["-t", spec.text.lower(), "-o", "/dev/stdout"]
        audio, rate_hz = read_wav(run_synthesiser(command))
    if spec.voice.pitch_control == PITCH_RESAMPLE:
        if rate_hz != spec.voice.sample_rate_hz:
            raise BuildError(
                f"flite voice {spec.voice.name} spoke at {rate_hz} Hz, not the "
                f"{spec.voice.sample_rate_hz} Hz found at start-up."
            )
        rate_hz = resampled_source_rate(rate_hz, spec.pitch)
    return audio, rate_hz


def run_festival_script(script: Path, timeout_s: float) -> str:
    """Run festival on a Scheme script in batch mode; return its stdout."""
    command = [FESTIVAL_BINARY, "--batch", str(script)]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"'{' '.join(command)}' failed: {error}") from error
    if result.returncode != 0:
        raise BuildError(
            f"'{' '.join(command)}' failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def scheme_string(text: str) -> str:
    """A Scheme string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=4)
def htsvoice_lf0_layout(model_file: str) -> tuple[bytes, int, int, int]:
    """Read an hts_engine voice file (format 1.0) and find its log-F0 pdfs.

    Returns ``(data, start, num_states, floats_per_pdf)``: the pdf block of stream LF0
    begins at byte ``start`` with one int32 pdf count per state, followed by the
    pdfs, each ``floats_per_pdf`` float32 (means, variances, voicing weight); the
    first mean is the static log F0.
    """
    data = Path(model_file).read_bytes()
    header_end = data.find(HTS_DATA_MARKER)
    if header_end < 0:
        raise ValueError("no [DATA] section")
    fields = {}
    for line in data[:header_end].decode("ascii", errors="replace").splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields[key] = value
    stream = LOG_F0_STREAM
    if fields.get("HTS_VOICE_VERSION") != "1.0" or stream not in fields.get(
        "STREAM_TYPE", ""
    ).split(","):
        raise ValueError("not an hts_engine 1.0 voice with a log-F0 stream")
    if fields.get(f"VECTOR_LENGTH[{stream}]") != "1" or fields.get(f"IS_MSD[{stream}]") != "1":
        raise ValueError("unexpected log-F0 stream shape")
    first, last = (int(value) for value in fields[f"STREAM_PDF[{stream}]"].split("-"))
    start = header_end + len(HTS_DATA_MARKER) + first
    num_states = int(fields["NUM_STATES"])
    floats_per_pdf = 2 * int(fields[f"NUM_WINDOWS[{stream}]"]) + 1
    counts = np.frombuffer(data, "<i4", num_states, start)
    if 4 * (num_states + int(counts.sum()) * floats_per_pdf) != last - first + 1:
        raise ValueError("log-F0 pdf block has an unexpected size")
    return data, start, num_states, floats_per_pdf


def htsvoice_problem(model_file: str) -> str:
    """Why an HTS voice's pitch cannot be shifted, or "" if it can."""
    try:
        htsvoice_lf0_layout(model_file)
    except (OSError, ValueError, KeyError) as error:
        return f"cannot shift the pitch of {model_file}: {error}"
    return ""


def shifted_htsvoice(model_file: str, semitones: float) -> bytes:
    """The voice file with every log-F0 mean raised by ``semitones`` (what hts_engine's
    ``-fm`` does, which festival 2.5 does not pass on)."""
    data, start, num_states, floats_per_pdf = htsvoice_lf0_layout(model_file)
    counts = np.frombuffer(data, "<i4", num_states, start)
    pdf_start = start + 4 * num_states
    pdfs = np.frombuffer(data, "<f4", int(counts.sum()) * floats_per_pdf, pdf_start).copy()
    pdfs.reshape(-1, floats_per_pdf)[:, 0] += np.float32(
        semitones * math.log(2) / SEMITONES_PER_OCTAVE
    )
    return data[:pdf_start] + pdfs.tobytes() + data[pdf_start + pdfs.nbytes :]


def festival_commands(spec: UtteranceSpec, wav_path: Path, model_file: str) -> str:
    """Scheme commands that synthesise one utterance to ``wav_path``.

    Every utterance selects its voice afresh (which resets the voice's settings), so
    that its audio does not depend on the utterances before it in the script.
    """
    voice = spec.voice
    lines = [f"(voice_{voice.name})"]
    if voice.pitch_control == PITCH_HTS_LOG_F0:
        lines.append(
            f'(set! hts_engine_params (list (list "-m" {scheme_string(model_file)}) '
            f'(list "-r" {spec.rate:.4f})))'
        )
        # festival keeps the HTS model loaded while current-voice keeps its name:
        # name it after the model file, so that a shifted copy is loaded.
        lines.append(f"(set! current-voice (intern {scheme_string(model_file)}))")
    else:
        factor = semitone_factor(spec.pitch)
        target_mean, target_std, model_mean, model_std = voice.f0_params
        lines.append(f"(Parameter.set 'Duration_Stretch {voice.duration_stretch / spec.rate:.4f})")
        lines.append(
            f"(set! int_lr_params '((target_f0_mean {target_mean * factor:.3f}) "
            f"(target_f0_std {target_std * factor:.3f}) (model_f0_mean {model_mean}) "
            f"(model_f0_std {model_std})))"
        )
    text = scheme_string(spec.text.lower())
    lines.append(
        f"(utt.save.wave (utt.synth (Utterance Text {text})) {scheme_string(str(wav_path))} 'riff)"
    )
    return "\n".join(lines) + "\n"


def festival_audio(specs: Sequence[UtteranceSpec], work_dir: Path) -> list[tuple[np.ndarray, int]]:
    """Synthesise festival utterances with one festival process; samples and rates."""
    model_files: dict[tuple[str, float], str] = {}
    script_parts = []
    wav_paths = []
    for position, spec in enumerate(specs):
        model_file = ""
        if spec.voice.pitch_control == PITCH_HTS_LOG_F0:
            key = (spec.voice.model_file, spec.pitch)
            if key not in model_files:
                path = work_dir / f"{spec.voice.name}{spec.pitch:+.2f}.htsvoice"
                path.write_bytes(shifted_htsvoice(spec.voice.model_file, spec.pitch))
                model_files[key] = str(path)
            model_file = model_files[key]
        wav_paths.append(work_dir / f"{position:05d}.wav")
        script_parts.append(festival_commands(spec, wav_paths[-1], model_file))
    script = work_dir / "synthesize.scm"
    script.write_text("".join(script_parts), encoding="utf-8")
    timeout_s = FESTIVAL_STARTUP_TIMEOUT_S + FESTIVAL_TIMEOUT_S_PER_UTTERANCE * len(specs)
    run_festival_script(script, timeout_s)
    results = []
    for spec, path in zip(specs, wav_paths):
        if not path.is_file():
            raise BuildError(
                f"festival wrote no audio for {spec.text!r} with voice {spec.voice.name}; "
                f"run 'festival --batch {script}' to see why."
            )
        results.append(read_wav(str(path)))
    return results


# --------------------------------------------------------------------------- audio


@functools.lru_cache(maxsize=64)
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
    """Polyphase resampling (numpy only); output length ``ceil(len * target / source)``.

    Output ``n = q * up + r`` sums ``bank[phase(r), k] * audio[start(r) + q * down - k]``
    over the taps ``k``, in order of ``k``: the phase and start depend on ``r`` only,
    so each tap is one multiply-add over a strided ``(q, r)`` view of the input (or,
    for few phases, over one of its columns per phase). Both orders of the loops do
    the same arithmetic, so the result does not depend on which one runs.
    """
    divisor = math.gcd(source_rate_hz, target_rate_hz)
    up, down = target_rate_hz // divisor, source_rate_hz // divisor
    if up == down:
        return audio.astype(np.float64)
    bank, delay = polyphase_filter_bank(up, down)
    taps_per_phase = bank.shape[1]
    num_out = -(-audio.size * up // down)
    num_periods = -(-num_out // up)
    centres = np.arange(up) * down + delay  # first period's output centres, upsampled grid
    coefficients = bank[centres % up]  # (up, taps)
    starts = centres // up + taps_per_phase  # input index of tap 0, in ``padded``
    span = int(starts.max()) + 1
    padded = np.zeros(max((num_periods - 1) * down + span, audio.size + taps_per_phase))
    padded[taps_per_phase : taps_per_phase + audio.size] = audio
    step = padded.strides[0]
    rows = np.lib.stride_tricks.as_strided(padded, (num_periods, span), (step * down, step))
    # Products go to a buffer allocated once: fresh large temporaries cost page faults.
    if up * taps_per_phase <= RESAMPLER_MAX_COLUMN_LOOPS:
        columns = np.zeros((up, num_periods))
        term = np.empty(num_periods)
        for phase in range(up):
            for k in range(taps_per_phase):
                np.multiply(rows[:, starts[phase] - k], coefficients[phase, k], out=term)
                columns[phase] += term
        return columns.T.reshape(-1)[:num_out]
    output = np.zeros((num_periods, up))
    block = max(1, RESAMPLER_BLOCK_VALUES // up)  # rows per block: temporaries stay in cache
    for first in range(0, num_periods, block):
        out, view = output[first : first + block], rows[first : first + block]
        for k in range(taps_per_phase):
            out += coefficients[:, k] * view[:, starts - k]
    return output.reshape(-1)[:num_out]


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


def write_utterance(audio: np.ndarray, rate_hz: int, spec: UtteranceSpec, path: str) -> int:
    """Resample, pad and write one utterance as 16 kHz FLAC; return its sample count."""
    audio = resample(audio, rate_hz, TARGET_SAMPLE_RATE_HZ)
    pcm = to_int16(pad_with_noise(audio, spec))
    sf.write(path, pcm, TARGET_SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
    return int(pcm.size)


def synthesize_chunk(jobs: Sequence[tuple[UtteranceSpec, str]], work_root: str) -> list[int]:
    """Worker: synthesise utterances to 16 kHz FLAC files; return their sample counts.

    espeak-ng and flite run once per utterance; the chunk's festival utterances share
    one festival process (its start-up is slow), with its files under ``work_root``.
    """
    festival_jobs = [
        position for position, (spec, _) in enumerate(jobs) if spec.voice.family == FESTIVAL
    ]
    festival_results = {}
    if festival_jobs:
        with tempfile.TemporaryDirectory(dir=work_root) as work_dir:
            specs = [jobs[position][0] for position in festival_jobs]
            festival_results = dict(zip(festival_jobs, festival_audio(specs, Path(work_dir))))
    counts = []
    for position, (spec, path) in enumerate(jobs):
        if spec.voice.family == FESTIVAL:
            audio, rate_hz = festival_results[position]
        elif spec.voice.family == FLITE:
            audio, rate_hz = flite_audio(spec)
        else:
            audio, rate_hz = espeak_audio(spec)
        counts.append(write_utterance(audio, rate_hz, spec, path))
    return counts


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
    return str(staging_dir / f"{spec.split}-{spec.voice.family}-{spec.index:07d}.flac")


def make_chunks(jobs: Sequence, num_workers: int) -> list[Sequence]:
    """Cut jobs into chunks for the pool, several per worker; chunks with festival
    utterances are larger, since each starts a festival process, but every worker
    still gets one."""
    size = max(1, len(jobs) // (num_workers * CHUNKS_PER_WORKER))
    if any(spec.voice.family == FESTIVAL for spec, _ in jobs):
        size = max(size, min(MIN_FESTIVAL_CHUNK_UTTERANCES, -(-len(jobs) // num_workers)))
    return [jobs[start : start + size] for start in range(0, len(jobs), size)]


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """Where and with what utterances are synthesised."""

    pool: multiprocessing.pool.Pool
    workers: int
    staging_dir: Path  # the FLAC files, until they get their LibriSpeech names
    # festival's scripts and WAV files: not under the output directory, since a
    # festival process may outlive its worker when the pool stops at the end
    work_root: str

    def in_order(self, specs: Sequence[UtteranceSpec]) -> Iterator[int]:
        """Synthesise ``specs``; yield their sample counts in order."""
        jobs = [(spec, staged_path(self.staging_dir, spec)) for spec in specs]
        worker = functools.partial(synthesize_chunk, work_root=self.work_root)
        for counts in self.pool.imap(worker, make_chunks(jobs, self.workers)):
            yield from counts


def synthesize_eval_split(
    specs: Sequence[UtteranceSpec], synthesis: Synthesis
) -> list[tuple[UtteranceSpec, int]]:
    """Synthesise a dev/test (or unseen-synthesiser) split completely."""
    bar = progress_bar(len(specs), specs[0].split if specs else "", "utt")
    results = []
    for spec, num_samples in zip(specs, synthesis.in_order(specs)):
        results.append((spec, num_samples))
        bar.update()
    bar.close()
    return results


def synthesize_train_split(
    plan: Iterator[UtteranceSpec],
    budget_samples: int,
    synthesis: Synthesis,
    description: str = TRAIN_SPLIT,
) -> list[tuple[UtteranceSpec, int]]:
    """Synthesise training utterances in plan order until their duration reaches the budget.

    Work is handed out in batches sized from the mean duration so far; results are
    taken in order, so the cut-off (and thus the corpus) does not depend on timing.
    """
    bar = progress_bar(math.ceil(budget_samples / TARGET_SAMPLE_RATE_HZ), description, "s audio")
    results: list[tuple[UtteranceSpec, int]] = []
    total_samples = 0
    shown_seconds = 0
    batch_size = FIRST_TRAIN_BATCH_UTTERANCES
    while total_samples < budget_samples:
        specs = list(itertools.islice(plan, batch_size))
        for spec, num_samples in zip(specs, synthesis.in_order(specs)):
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
        batch_size = min(MAX_TRAIN_BATCH_UTTERANCES, max(2 * synthesis.workers, wanted))
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
    subsets = {
        speaker_id: ",".join(split for split in layout if split in per_split)
        for speaker_id, per_split in minutes.items()
    }
    subset_width = max(16, *map(len, subsets.values()))
    lines = [
        "; Synthetic speakers: an espeak-ng (accent, voice variant) pair, or one of several\n",
        "; rate/pitch settings of a flite or festival voice; NAME is family:voice.\n",
        "; SUBSET lists every split with audio from the speaker; MINUTES is their total.\n",
        "; Speakers held out of training, and the held-out family, are listed in SPLITS.json.\n",
        f";ID  |SEX| {'SUBSET':<{subset_width}} |MINUTES| NAME\n",
    ]
    for speaker in speakers:
        per_split = minutes.get(speaker.speaker_id)
        if per_split:
            lines.append(
                f"{speaker.speaker_id:<5}| {speaker.voice.sex} | "
                f"{subsets[speaker.speaker_id]:<{subset_width}} | "
                f"{sum(per_split.values()):5.2f} | {speaker.voice.label}\n"
            )
    path.write_text("".join(lines), encoding="utf-8")


def split_summary(utterances: Sequence[Utterance], held_out: HeldOut) -> dict:
    """Counts and duration of one split."""
    speaker_ids = {utterance.spec.speaker_id for utterance in utterances}
    total_samples = sum(utterance.num_samples for utterance in utterances)
    families: dict[str, dict[str, float]] = {}
    for utterance in utterances:
        row = families.setdefault(utterance.spec.voice.family, {"utterances": 0, "hours": 0.0})
        row["utterances"] += 1
        row["hours"] += utterance.num_samples / TARGET_SAMPLE_RATE_HZ / SECONDS_PER_HOUR
    return {
        "utterances": len(utterances),
        "hours": round(total_samples / TARGET_SAMPLE_RATE_HZ / SECONDS_PER_HOUR, 4),
        "speakers": len(speaker_ids),
        "held_out_speakers": len(speaker_ids & held_out.speaker_ids),
        "chapters": len({(u.spec.speaker_id, u.chapter_id) for u in utterances}),
        "distinct_sentences": len({utterance.spec.text for utterance in utterances}),
        "families": {
            family: {"utterances": row["utterances"], "hours": round(row["hours"], 4)}
            for family, row in sorted(families.items(), key=lambda item: FAMILIES.index(item[0]))
        },
    }


def check_splits(
    results: dict[str, Sequence[tuple[UtteranceSpec, int]]], held_out: HeldOut
) -> None:
    """Fail loudly if the splits break their rules (would be a bug in this script): a
    training sentence in an evaluation split, a dev sentence in test, the held-out
    family or a held-out speaker in train, or an unseen-synthesiser split that does not
    repeat its clean split's first sentences in order."""
    texts = {split: [spec.text for spec, _ in members] for split, members in results.items()}
    train_texts = set(texts[TRAIN_SPLIT])
    for split in texts.keys() - {TRAIN_SPLIT}:
        shared = train_texts.intersection(texts[split])
        if shared:
            raise AssertionError(f"{len(shared)} sentences occur in both train and {split}")
    shared = set(texts["dev"]).intersection(texts["test"])
    if shared:
        raise AssertionError(f"{len(shared)} sentences occur in both dev and test")
    for spec, _ in results[TRAIN_SPLIT]:
        if spec.voice.family == held_out.family or spec.speaker_id in held_out.speaker_ids:
            raise AssertionError(
                f"held-out speaker {spec.speaker_id} ({spec.voice.label}) in train"
            )
    for unseen in UNSEEN_SPLITS:
        if unseen in results:
            source = texts[unseen.removesuffix(UNSEEN_TTS_SUFFIX)]
            if texts[unseen] != source[: len(texts[unseen])]:
                raise AssertionError(f"{unseen} does not repeat the first sentences of its split")
            if any(spec.voice.family != held_out.family for spec, _ in results[unseen]):
                raise AssertionError(f"{unseen} has a voice outside the held-out family")


# --------------------------------------------------------------------------- build state


def build_parameters(args: argparse.Namespace) -> dict:
    """The parameters that determine the corpus (not ``--jobs``)."""
    return {
        "format_version": FORMAT_VERSION,
        "hours": args.hours,
        "seed": args.seed,
        "dev_fraction": args.dev_fraction,
        "test_fraction": args.test_fraction,
        "held_out_family": args.held_out_family,
        "family_share": args.family_share,
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


def family_voices_record(family: str, family_voices: Sequence[Voice]) -> int | dict:
    """SPLITS.json's voices of a family: espeak-ng's count, or each other family's voices."""
    if family == ESPEAK:
        return len(family_voices)  # every accent x variant; see "accents" and "variants"
    return {
        voice.name: {
            "sex": voice.sex,
            "pitch_control": voice.pitch_control,
            "speakers": SPEAKERS_PER_VOICE[family],
            **({"in_process": voice.in_process} if family == FLITE else {}),
        }
        for voice in family_voices
    }


def family_record(family: str, plan: CorpusPlan, voices: dict[str, list[Voice]]) -> dict:
    """SPLITS.json's entry of a family: its voices and speakers, how many held out of training."""
    members = [speaker for speaker in plan.speakers if speaker.family == family]
    return {
        "voices": family_voices_record(family, voices.get(family, ())),
        "speakers": len(members),
        "held_out_of_training": sum(s.speaker_id in plan.held_out.speaker_ids for s in members),
        "first_speaker_id": members[0].speaker_id if members else None,
    }


def sentences_record(plan: CorpusPlan, num_sentences: int) -> dict:
    """SPLITS.json's sentence counts: available, in each split's pool and each family's training pool."""
    return {
        "available": num_sentences,
        **{f"{split}_pool": len(plan.pools[split]) for split in (TRAIN_SPLIT, *EVAL_SPLITS)},
        **{
            f"train_pool_{family}": len(plan.train_sentences[family])
            for family in plan.train_sentences
        },
    }


def held_out_record(plan: CorpusPlan) -> dict:
    """SPLITS.json's held-out family, accents, variants and speakers (id: voice label)."""
    held_out = plan.held_out
    return {
        "family": held_out.family,
        "accents": list(held_out.accents),
        "variants": list(held_out.variants),
        "speakers": {
            str(s.speaker_id): s.voice.label
            for s in plan.speakers
            if s.speaker_id in held_out.speaker_ids
        },
    }


def splits_record(
    args: argparse.Namespace,
    plan: CorpusPlan,
    summary: dict,
    num_sentences: int,
    voices: dict[str, list[Voice]],
    dropped: dict[str, dict[str, str]],
) -> dict:
    """The contents of SPLITS.json."""
    return {
        "seed": args.seed,
        "families": list(FAMILIES),
        "held_out_family": plan.held_out.family,
        "training_families": plan.training_families,
        "family_share": plan.family_share,
        "splits": summary,
        "sentences": sentences_record(plan, num_sentences),
        "speakers": len(plan.speakers),
        "speakers_per_family": {family: family_record(family, plan, voices) for family in FAMILIES},
        "accents": sorted({voice.accent for voice in voices.get(ESPEAK, ())}),
        "variants": sorted({voice.variant for voice in voices.get(ESPEAK, ())}),
        "held_out": held_out_record(plan),
        "excluded_variants": EXCLUDED_VARIANTS,
        "excluded_voices": {FLITE: FLITE_EXCLUDED_VOICES},
        "dropped_voices": dropped,
    }


# --------------------------------------------------------------------------- main


def parse_family_share(text: str | None, families: Sequence[str]) -> dict[str, float]:
    """Parse ``--family-share`` (``family=weight,...``) into shares of the training
    families that sum to 1; None gives DEFAULT_FAMILY_SHARE's weights."""
    if text is None:
        weights = {family: DEFAULT_FAMILY_SHARE[family] for family in families}
    else:
        weights = {}
        for item in text.split(","):
            name, separator, value = item.partition("=")
            name = name.strip()
            if not separator or name not in FAMILIES:
                raise ValueError(
                    f"expected FAMILY=WEIGHT with FAMILY one of {', '.join(FAMILIES)}, got {item!r}"
                )
            if name not in families:
                raise ValueError(
                    f"{name} is the held-out family (--held-out-family); it has no training share"
                )
            try:
                weight = float(value)
            except ValueError:
                raise ValueError(f"{name}'s weight {value!r} is not a number") from None
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"{name}'s weight must be positive, got {value}")
            weights[name] = weight
        missing = [family for family in families if family not in weights]
        if missing:
            raise ValueError(f"give every training family a share; missing: {', '.join(missing)}")
    total = sum(weights.values())
    return {family: round(weights[family] / total, 6) for family in families}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help; the module docstring as written."""


def add_size_options(parser: argparse.ArgumentParser) -> None:
    """--out, --hours, --seed, --jobs and the dev and test fractions."""
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


def add_family_options(parser: argparse.ArgumentParser) -> None:
    """--held-out-family and --family-share."""
    parser.add_argument(
        "--held-out-family",
        choices=(*FAMILIES, NO_FAMILY),
        default=DEFAULT_HELD_OUT_FAMILY,
        help="synthesiser family kept out of train/dev/test; it speaks dev_unseen_tts and "
        "test_unseen_tts ('none': every family trains, no unseen-synthesiser splits)",
    )
    parser.add_argument(
        "--family-share",
        default=argparse.SUPPRESS,
        metavar="FAMILY=W,...",
        help="relative shares of the training audio per training family, e.g. "
        "espeak-ng=0.5,flite=0.5; by default the training families share equally",
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse out-of-range values (through ``parser.error``) and turn --family-share into shares."""
    if not args.hours > 0:
        parser.error("--hours must be positive")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    for name in ("dev_fraction", "test_fraction"):
        if not 0 < getattr(args, name) < 0.5:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 0.5")
    held_out_family = None if args.held_out_family == NO_FAMILY else args.held_out_family
    try:
        args.family_share = parse_family_share(
            getattr(args, "family_share", None), training_families(held_out_family)
        )
    except ValueError as error:
        parser.error(f"--family-share: {error}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(
        prog="make_mini_librispeech.py", description=__doc__, formatter_class=HelpFormatter
    )
    add_size_options(parser)
    add_family_options(parser)
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def print_summary(out_dir: Path, summary: dict, plan: CorpusPlan) -> None:
    """Print the per-split table, the speakers and the held-out voices to stdout."""
    print(f"\nCorpus written to {out_dir}")
    family_columns = [
        family for family in FAMILIES if any(family in row["families"] for row in summary.values())
    ]
    width = max(map(len, summary))
    header = f"{'split':<{width}} {'utterances':>10} {'hours':>7} {'speakers':>9} {'held-out':>9}"
    print(header + "".join(f" {family:>10}" for family in family_columns))
    for split, row in summary.items():
        counts = "".join(
            f" {row['families'].get(family, {}).get('utterances', 0):>10}"
            for family in family_columns
        )
        print(
            f"{split:<{width}} {row['utterances']:>10} {row['hours']:>7.3f} {row['speakers']:>9} "
            f"{row['held_out_speakers']:>9}{counts}"
        )
    train = summary[TRAIN_SPLIT]
    if train["distinct_sentences"] < train["utterances"]:
        print(
            f"Note: --hours exceeds one pass over the training sentences; "
            f"{train['distinct_sentences']} distinct sentences are reused with other voices."
        )
    held_out = plan.held_out
    print(
        f"Speakers: {len(plan.speakers)} in total, {len(held_out.speaker_ids)} held out of training"
    )
    for family in FAMILIES:
        members = [speaker for speaker in plan.speakers if speaker.family == family]
        voices = sorted({speaker.voice.name for speaker in members})
        held = sum(speaker.speaker_id in held_out.speaker_ids for speaker in members)
        role = "held-out family" if family == held_out.family else f"{held} held out of training"
        print(f"  {family}: {len(members)} speakers of {len(voices)} voices ({role})")
    print(f"Held-out family: {held_out.family or 'none'}")
    print(f"Held-out espeak-ng accents (every variant): {', '.join(held_out.accents) or 'none'}")
    variants = [variant or "(default voice)" for variant in held_out.variants]
    print(f"Held-out espeak-ng variants (every accent): {', '.join(variants) or 'none'}")
    print(f"Details: {out_dir / SPLITS_FILE}, {out_dir / SPEAKERS_FILE}")


def describe_voices(plan: CorpusPlan) -> str:
    """One line per family: voices, speakers and their role."""
    lines = []
    for family in FAMILIES:
        members = [speaker for speaker in plan.speakers if speaker.family == family]
        voices = list(dict.fromkeys(speaker.voice.name for speaker in members))
        if family == ESPEAK:
            accents = {speaker.voice.accent for speaker in members}
            variants = {speaker.voice.variant for speaker in members}
            layout = f"{len(accents)} accents x {len(variants)} variants"
        else:
            layout = f"{len(voices)} voices ({', '.join(voices)}) x {SPEAKERS_PER_VOICE[family]}"
        if family == plan.held_out.family:
            role = "held-out family: unseen-synthesiser splits only"
        else:
            held = sum(speaker.speaker_id in plan.held_out.speaker_ids for speaker in members)
            role = f"{held} held out of training"
        lines.append(f"Voices: {family}: {layout} = {len(members)} speakers ({role}).")
    return "\n".join(lines)


def synthesize_splits(plan: CorpusPlan, synthesis: Synthesis) -> dict[str, list[Utterance]]:
    """Synthesise the evaluation splits, then each training family's share of train."""
    results = {}
    for split, specs in plan.eval_specs.items():
        results[split] = synthesize_eval_split(specs, synthesis)
    results[TRAIN_SPLIT] = []
    for family in plan.training_families:
        results[TRAIN_SPLIT] += synthesize_train_split(
            plan.train_plans[family],
            plan.train_budgets[family],
            synthesis,
            description=f"train {family}",
        )
    return results


def plan_and_synthesize(
    args: argparse.Namespace, sentences: list[str], staging_dir: Path
) -> tuple[CorpusPlan, dict[str, list[Voice]], dict[str, dict[str, str]], dict[str, list[Utterance]]]:
    """Find the voices, plan the corpus and synthesise it into ``staging_dir``:
    ``(plan, voices, dropped voices, utterances per split)``."""
    with (
        tempfile.TemporaryDirectory(
            prefix=FESTIVAL_WORK_DIR_PREFIX, ignore_cleanup_errors=True
        ) as work_root,
        multiprocessing.Pool(args.jobs) as pool,
    ):
        voices, dropped = find_voices(pool, work_root)
        plan = plan_corpus(voices, sentences, args)
        print(describe_voices(plan), flush=True)
        results = synthesize_splits(plan, Synthesis(pool, args.jobs, staging_dir, work_root))
    # Leaving the pool terminates it, dropping work queued beyond the training budget;
    # then festival's temporary files go.
    return plan, voices, dropped, results


def write_splits(
    plan: CorpusPlan, results: dict[str, list[Utterance]], out_dir: Path, staging_dir: Path
) -> dict[str, list[Utterance]]:
    """Give the utterances chapters, move them from ``staging_dir`` into each split; the layout."""
    layout: dict[str, list[Utterance]] = {}
    next_chapter_id = FIRST_CHAPTER_ID
    for split in plan.splits:
        layout[split], next_chapter_id = assign_chapters(results[split], next_chapter_id)
        write_split(layout[split], out_dir, staging_dir)
    shutil.rmtree(staging_dir)
    return layout


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
    if is_complete_build(out_dir, parameters):  # built before the LM texts existed
        pools = partition_sentences(
            sentences, args.dev_fraction, args.test_fraction, make_rngs(args.seed)["sentences"]
        )
        write_lm_texts(out_dir, wordnet_files, pools)
        return
    require_synthesisers(FAMILIES)

    prepare_output_dir(out_dir, parameters)
    staging_dir = out_dir / STAGING_DIR
    staging_dir.mkdir()
    plan, voices, dropped, results = plan_and_synthesize(args, sentences, staging_dir)
    check_splits(results, plan.held_out)
    layout = write_splits(plan, results, out_dir, staging_dir)
    write_lm_texts(out_dir, wordnet_files, plan.pools)

    summary = {split: split_summary(layout[split], plan.held_out) for split in plan.splits}
    write_speakers_file(out_dir / SPEAKERS_FILE, plan.speakers, layout)
    write_license(out_dir)
    write_json(
        out_dir / SPLITS_FILE, splits_record(args, plan, summary, len(sentences), voices, dropped)
    )
    write_json(
        out_dir / BUILD_FILE,
        {"parameters": parameters, "synthesisers": synthesiser_versions(FAMILIES)},
    )
    (out_dir / PARTIAL_MARKER_FILE).unlink()
    print_summary(out_dir, summary, plan)


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
