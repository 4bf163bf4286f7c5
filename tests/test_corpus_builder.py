"""The bundled corpus builder: synthesiser families, splits, held-out speakers and family.

Planning tests use made-up voices and sentences and synthesise nothing; the build
tests synthesise a tiny corpus with espeak-ng, flite and festival (installed by
tools/setup.sh) twice, with different --jobs, and compare the files byte by byte.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
BUILD_HOURS = 0.01  # dev/test get their minimum of 20 utterances; train about a dozen


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location(
        "make_mini_librispeech", REPO / "data" / "make_mini_librispeech.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


# -- planning, no synthesis ---------------------------------------------------------


def make_voices(b) -> dict:
    """Voices shaped like the installed ones: 4 espeak-ng accents x 10 variants, five
    flite voices (one pitched by resampling), three festival voices."""
    accents = ["en-029", "en-gb", "en-gb-scotland", "en-us"]
    variants = ["", *(f"v{number}" for number in range(9))]
    espeak = [
        b.Voice(
            b.ESPEAK,
            f"{accent}+{variant}" if variant else accent,
            "M",
            b.PITCH_ESPEAK,
            accent=accent,
            variant=variant,
        )
        for accent in accents
        for variant in variants
    ]
    flite = [
        b.Voice(
            b.FLITE, name, "M", b.PITCH_RESAMPLE if name == "rms" else b.PITCH_FLITE_F0, sample_rate_hz=16000
        )
        for name in ("kal", "kal16", "awb", "rms", "slt")
    ]
    festival = [
        b.Voice(
            b.FESTIVAL,
            "kal_diphone",
            "M",
            b.PITCH_FESTIVAL_LR,
            duration_stretch=1.1,
            f0_params=(105, 14, 170, 34),
        ),
        b.Voice(
            b.FESTIVAL,
            "ked_diphone",
            "M",
            b.PITCH_FESTIVAL_LR,
            duration_stretch=1.1,
            f0_params=(105, 15, 170, 34),
        ),
        b.Voice(b.FESTIVAL, "slt_hts", "F", b.PITCH_HTS_LOG_F0, model_file="/nonexistent.htsvoice"),
    ]
    return {b.ESPEAK: espeak, b.FLITE: flite, b.FESTIVAL: festival}


SENTENCES = sorted(f"SENTENCE {a} {b} {c}" for a in "ABCDEFGHIJ" for b in "KLMNOPQRST" for c in "UVWXYZ")


def plan(b, *options: str):
    args = b.parse_args(
        ["--out", "/unused", "--hours", "1.0", "--dev-fraction", "0.1", "--test-fraction", "0.1", *options]
    )
    return b.plan_corpus(make_voices(b), SENTENCES, args)


def take_train(corpus_plan, count: int) -> dict[str, list]:
    """The first ``count`` planned training utterances of each training family."""
    return {
        family: [next(stream) for _ in range(count)] for family, stream in corpus_plan.train_plans.items()
    }


def test_training_audio_is_shared_between_the_training_families(builder):
    b = builder
    default = plan(b)
    assert default.training_families == [b.ESPEAK, b.FLITE]
    assert default.family_share == {b.ESPEAK: 0.5, b.FLITE: 0.5}
    total = 1.0 * b.SECONDS_PER_HOUR * b.TARGET_SAMPLE_RATE_HZ
    assert default.train_budgets == {b.ESPEAK: total / 2, b.FLITE: total / 2}
    # The training sentences are dealt out, disjoint, in proportion to the shares.
    skewed = plan(b, "--family-share", "espeak-ng=1,flite=3")
    assert skewed.family_share == {b.ESPEAK: 0.25, b.FLITE: 0.75}
    assert skewed.train_budgets[b.FLITE] == pytest.approx(3 * skewed.train_budgets[b.ESPEAK], abs=1)
    dealt = skewed.train_sentences
    assert abs(len(dealt[b.FLITE]) - 3 * len(dealt[b.ESPEAK])) <= 3
    assert sorted(dealt[b.ESPEAK] + dealt[b.FLITE]) == sorted(skewed.pools["train"])
    # Each family speaks its own sentences first, in order.
    first = take_train(skewed, 50)
    for family, specs in first.items():
        assert [spec.text for spec in specs] == dealt[family][:50]
        assert {spec.voice.family for spec in specs} == {family}


@pytest.mark.parametrize(
    "share",
    [
        "festival=1,espeak-ng=1,flite=1",
        "espeak-ng=1",
        "espeak-ng=1,flite=0",
        "espeak-ng=1,flite=x",
        "piper=1,flite=1",
    ],
)
def test_bad_family_shares_are_refused(builder, share, capsys):
    with pytest.raises(SystemExit):
        builder.parse_args(["--out", "/unused", "--family-share", share])
    assert "--family-share" in capsys.readouterr().err


def test_the_held_out_family_is_never_in_train_and_speaks_the_unseen_splits(builder):
    b = builder
    for held_out, training in ((b.FESTIVAL, {b.ESPEAK, b.FLITE}), (b.FLITE, {b.ESPEAK, b.FESTIVAL})):
        corpus_plan = plan(b, "--held-out-family", held_out)
        assert set(corpus_plan.training_families) == training
        train = [spec for specs in take_train(corpus_plan, 300).values() for spec in specs]
        assert {spec.voice.family for spec in train} == training
        assert not {spec.speaker_id for spec in train} & corpus_plan.held_out.speaker_ids
        for split in ("dev", "test"):
            assert {spec.voice.family for spec in corpus_plan.eval_specs[split]} == training
        for split in b.UNSEEN_SPLITS:
            assert {spec.voice.family for spec in corpus_plan.eval_specs[split]} == {held_out}


def test_unseen_splits_repeat_the_first_dev_and_test_sentences_in_order(builder):
    b = builder
    corpus_plan = plan(b)
    assert list(corpus_plan.eval_specs) == ["dev", "test", "dev_unseen_tts", "test_unseen_tts"]
    festival_speakers = [s.speaker_id for s in corpus_plan.speakers if s.family == b.FESTIVAL]
    for split in ("dev", "test"):
        clean, unseen = corpus_plan.eval_specs[split], corpus_plan.eval_specs[f"{split}_unseen_tts"]
        assert len(unseen) == b.unseen_utterance_count(len(clean)) > 0
        assert [spec.text for spec in unseen] == [spec.text for spec in clean[: len(unseen)]]
        assert [spec.index for spec in unseen] == list(range(len(unseen)))
        # round robin: every held-out-family speaker in turn
        counts = collections.Counter(spec.speaker_id for spec in unseen)
        assert set(counts) <= set(festival_speakers)
        assert max(counts.values()) - min(counts.values()) <= 1
        assert len(counts) == min(len(unseen), len(festival_speakers))


def test_no_held_out_family_means_every_family_trains_and_no_unseen_splits(builder):
    b = builder
    corpus_plan = plan(b, "--held-out-family", "none")
    assert corpus_plan.held_out.family is None
    assert corpus_plan.training_families == list(b.FAMILIES)
    assert list(corpus_plan.eval_specs) == ["dev", "test"]
    assert corpus_plan.splits == ["train", "dev", "test"]
    assert set(corpus_plan.family_share) == set(b.FAMILIES)
    assert {spec.voice.family for spec in corpus_plan.eval_specs["dev"]} == set(b.FAMILIES)


def test_train_sentences_never_occur_in_dev_or_test(builder):
    b = builder
    corpus_plan = plan(b)
    pools = corpus_plan.pools
    assert not set(pools["train"]) & set(pools["dev"])
    assert not set(pools["train"]) & set(pools["test"])
    assert not set(pools["dev"]) & set(pools["test"])
    assert sorted(pools["train"] + pools["dev"] + pools["test"]) == SENTENCES
    train_texts = {spec.text for specs in take_train(corpus_plan, 500).values() for spec in specs}
    assert train_texts <= set(pools["train"])
    for split in ("dev", "test"):
        assert [spec.text for spec in corpus_plan.eval_specs[split]] == pools[split][
            : len(corpus_plan.eval_specs[split])
        ]


def test_dev_and_test_alternate_families_and_held_out_speakers(builder):
    b = builder
    corpus_plan = plan(b)
    held = corpus_plan.held_out.speaker_ids
    by_id = {speaker.speaker_id: speaker for speaker in corpus_plan.speakers}
    # espeak-ng holds out whole accents and whole variants
    espeak = [s for s in corpus_plan.speakers if s.family == b.ESPEAK]
    assert len(corpus_plan.held_out.accents) == 1
    for speaker in espeak:
        in_held_voice = (
            speaker.voice.accent in corpus_plan.held_out.accents
            or speaker.voice.variant in corpus_plan.held_out.variants
        )
        assert (speaker.speaker_id in held) == in_held_voice
    # flite holds out settings of every voice, never a whole voice
    flite = [s for s in corpus_plan.speakers if s.family == b.FLITE]
    per_voice = collections.defaultdict(lambda: [0, 0])
    for speaker in flite:
        per_voice[speaker.voice.name][speaker.speaker_id in held] += 1
    expected = b.held_out_per_voice(b.FLITE_SPEAKERS_PER_VOICE)
    assert 1 <= expected < b.FLITE_SPEAKERS_PER_VOICE
    assert all(held_count == expected and seen > 0 for seen, held_count in per_voice.values())
    # the festival family is held out as a whole, so none of its speakers is counted here
    assert not {s.speaker_id for s in corpus_plan.speakers if s.family == b.FESTIVAL} & held
    for split in ("dev", "test"):
        specs = corpus_plan.eval_specs[split]
        for index, spec in enumerate(specs):
            assert spec.voice.family == corpus_plan.training_families[index % 2]
            # per family: held-out, training, held-out, ...
            assert (spec.speaker_id in held) == ((index // 2) % 2 == 0)
            assert by_id[spec.speaker_id].voice == spec.voice


def test_speakers_are_unique_and_prosody_jitters_around_their_base(builder):
    b = builder
    corpus_plan = plan(b)
    ids = [speaker.speaker_id for speaker in corpus_plan.speakers]
    assert (
        len(ids) == len(set(ids)) == 40 + 5 * b.FLITE_SPEAKERS_PER_VOICE + 3 * b.FESTIVAL_SPEAKERS_PER_VOICE
    )
    assert ids == list(range(b.FIRST_SPEAKER_ID, b.FIRST_SPEAKER_ID + len(ids)))
    by_id = {speaker.speaker_id: speaker for speaker in corpus_plan.speakers}
    specs = [spec for split in corpus_plan.eval_specs.values() for spec in split]
    specs += [spec for family in take_train(corpus_plan, 200).values() for spec in family]
    for spec in specs:
        speaker = by_id[spec.speaker_id]
        if spec.voice.family == b.ESPEAK:
            assert abs(spec.rate - speaker.base_rate) <= b.RATE_JITTER_WPM
            assert abs(spec.pitch - speaker.base_pitch) <= b.PITCH_JITTER
        else:
            assert abs(spec.rate - speaker.base_rate) <= b.TEMPO_JITTER + 1e-3
            assert abs(spec.pitch - speaker.base_pitch) <= b.SEMITONE_JITTER + 1e-2
    # several speakers of one flite voice differ in rate and pitch
    slt = [s for s in corpus_plan.speakers if s.voice.name == "slt"]
    assert len({(s.base_rate, s.base_pitch) for s in slt}) == len(slt)
    # resampling moves formants too, so its pitch range is narrower
    rms = [s for s in corpus_plan.speakers if s.voice.name == "rms"]
    assert all(abs(s.base_pitch) <= b.RESAMPLED_SEMITONE_RANGE[1] for s in rms)


def test_planning_is_reproducible_from_the_seed(builder):
    b = builder
    first, second, other = plan(b), plan(b), plan(b, "--seed", "1")
    assert first.eval_specs == second.eval_specs
    assert take_train(first, 100) == take_train(second, 100)
    assert first.eval_specs != other.eval_specs


def reference_resample(b, audio, source_rate_hz, target_rate_hz):
    """The builder's first resampler: one gather per tap over all outputs."""
    divisor = math.gcd(source_rate_hz, target_rate_hz)
    up, down = target_rate_hz // divisor, source_rate_hz // divisor
    bank, delay = b.polyphase_filter_bank(up, down)
    taps = bank.shape[1]
    num_out = -(-audio.size * up // down)
    positions = np.arange(num_out) * down + delay
    phases, inputs = positions % up, positions // up
    padded = np.concatenate([np.zeros(taps), audio, np.zeros(max(0, int(inputs[-1]) - audio.size + 1))])
    output = np.zeros(num_out)
    for k in range(taps):
        output += bank[phases, k] * padded[inputs - k + taps]
    return output


@pytest.mark.parametrize("source_rate_hz", [8_000, 22_050, 32_000, 16_800, 15_100])
def test_resample_equals_the_direct_polyphase_sum_bit_for_bit(builder, source_rate_hz):
    audio = np.random.default_rng(source_rate_hz).normal(size=source_rate_hz // 3 + 7)
    result = builder.resample(audio, source_rate_hz, 16_000)
    assert result.size == math.ceil(audio.size * 16_000 / source_rate_hz)
    assert np.array_equal(result, reference_resample(builder, audio, source_rate_hz, 16_000))


def test_pitch_by_resampling_reads_the_audio_faster_and_stretches_it_first(builder):
    b = builder
    voice = b.Voice(b.FLITE, "rms", "M", b.PITCH_RESAMPLE, sample_rate_hz=16_000)
    spec = b.UtteranceSpec("train", 0, "A B", 1, voice, 1.1, 2.0, 50, 50, 0)
    source = b.resampled_source_rate(16_000, 2.0)
    assert source % b.RESAMPLE_RATE_STEP_HZ == 0
    assert source / 16_000 == pytest.approx(2 ** (2 / 12), abs=b.RESAMPLE_RATE_STEP_HZ / 16_000)
    ((name, value),) = b.flite_features(spec)
    assert name == "duration_stretch" and float(value) == pytest.approx(source / 16_000 / 1.1, abs=1e-4)


def test_a_missing_synthesiser_names_its_package(builder, monkeypatch):
    b = builder
    monkeypatch.setattr(
        b.shutil, "which", lambda binary: None if binary == "festival" else f"/usr/bin/{binary}"
    )
    with pytest.raises(b.BuildError, match="apt-get install festival festvox-kallpc16k"):
        b.require_synthesisers(b.FAMILIES)


# -- real builds --------------------------------------------------------------------


def checksums(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def corpora(builder, tmp_path_factory):
    """The same tiny corpus built with --jobs 2 and --jobs 1."""
    root = tmp_path_factory.mktemp("corpus")
    built = {}
    for jobs in (2, 1):
        out = root / f"jobs{jobs}"
        assert builder.main(["--out", str(out), "--hours", str(BUILD_HOURS), "--jobs", str(jobs)]) == 0
        built[jobs] = out
    return built


def test_build_is_byte_identical_whatever_the_jobs(corpora):
    first, second = checksums(corpora[2]), checksums(corpora[1])
    assert len(first) > 100
    assert first == second


def test_build_writes_every_split_as_16_khz_mono_flac(builder, corpora):
    out = corpora[2]
    splits = json.loads((out / "SPLITS.json").read_text())
    for split in ("train", "dev", "test", "dev_unseen_tts", "test_unseen_tts"):
        flacs = sorted((out / split).rglob("*.flac"))
        assert len(flacs) == splits["splits"][split]["utterances"] > 0
        transcripts = {}
        for path in (out / split).rglob("*.trans.txt"):
            for line in path.read_text().splitlines():
                utterance_id, text = line.split(" ", 1)
                transcripts[utterance_id] = text
        assert set(transcripts) == {path.stem for path in flacs}
        for path in flacs:
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (
                16_000,
                1,
                "FLAC",
                "PCM_16",
            )
            assert info.frames > 0.3 * 16_000
    families = {split: set(row["families"]) for split, row in splits["splits"].items()}
    assert families == {
        "train": {"espeak-ng", "flite"},
        "dev": {"espeak-ng", "flite"},
        "test": {"espeak-ng", "flite"},
        "dev_unseen_tts": {"festival"},
        "test_unseen_tts": {"festival"},
    }
    assert splits["held_out_family"] == "festival"
    assert splits["splits"]["dev_unseen_tts"]["utterances"] == builder.unseen_utterance_count(
        splits["splits"]["dev"]["utterances"]
    )


def test_unseen_split_transcripts_follow_the_clean_split(corpora):
    out = corpora[2]

    def texts_by_speaker(split):
        lines = [
            line for path in (out / split).rglob("*.trans.txt") for line in path.read_text().splitlines()
        ]
        return [line.split(" ", 1)[1] for line in lines]

    for split in ("dev", "test"):
        clean, unseen = texts_by_speaker(split), texts_by_speaker(f"{split}_unseen_tts")
        assert set(unseen) <= set(clean)
        assert not set(unseen) & set(texts_by_speaker("train"))


def test_build_records_speakers_families_and_versions(builder, corpora):
    out = corpora[2]
    names = {}
    for line in (out / "SPEAKERS.TXT").read_text().splitlines():
        if not line.startswith(";"):
            speaker_id, sex, subsets, minutes, name = (field.strip() for field in line.split("|"))
            names[speaker_id] = name
            assert sex in ("M", "F", "U") and float(minutes) > 0
            family = name.split(":")[0]
            assert ("unseen_tts" in subsets) == (family == "festival")
    assert {name.split(":")[0] for name in names.values()} == {"espeak-ng", "flite", "festival"}
    assert any(name.startswith("flite:") and name != "flite:awb_time" for name in names.values())
    for split in ("train", "dev", "dev_unseen_tts"):
        assert {path.name for path in (out / split).iterdir()} <= set(names)
    build = json.loads((out / ".build.json").read_text())
    assert build["parameters"]["format_version"] == builder.FORMAT_VERSION
    assert build["parameters"]["held_out_family"] == "festival"
    assert set(build["synthesisers"]) == {"espeak-ng", "flite", "festival"}
    assert all(row["version"] for row in build["synthesisers"].values())
    splits = json.loads((out / "SPLITS.json").read_text())
    per_family = splits["speakers_per_family"]
    assert (
        per_family["flite"]["speakers"]
        == len(per_family["flite"]["voices"]) * builder.FLITE_SPEAKERS_PER_VOICE
    )
    assert per_family["festival"]["held_out_of_training"] == 0
    assert "awb_time" not in per_family["flite"]["voices"]
    # a complete build with the same parameters is left alone
    before = checksums(out)
    assert builder.main(["--out", str(out), "--hours", str(BUILD_HOURS)]) == 0
    assert checksums(out) == before
