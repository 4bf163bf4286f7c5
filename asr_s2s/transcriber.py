"""Transcribing recordings of any length: segment at pauses, decode in batches, time the words.

::

    import asr_s2s

    transcriber = asr_s2s.load_model("exp/las/model")
    result = transcriber.transcribe("talk.flac", beam_size=10, scorers={"ctc": 0.3})
    print(result.text)
    for segment in result.segments:
        print(segment.start, segment.end, segment.text, [(w.word, w.start) for w in segment.words])

A file is read as a stream (:func:`asr_s2s.audio.stream_audio`) and cut at
pauses into segments of at most ``max_segment_s`` (:mod:`asr_s2s.vad`).
Segments, from one file or many, are decoded together in batches of at most
``batch_seconds`` padded audio, so memory does not grow with the recording.
Word times come from CTC forced alignment of each segment's hypothesis
(:mod:`asr_s2s.alignment`) when the model has a CTC head.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from asr_s2s.alignment import align_words
from asr_s2s.audio import SAMPLE_RATE_HZ, array_to_mono, load_audio, stream_audio
from asr_s2s.config import DecodeConfig
from asr_s2s.errors import AsrS2SError, AudioLoadError, ConfigError, TranscriptionCancelled
from asr_s2s.features import FRAME_SHIFT_MS, fbank
from asr_s2s.model import ASRModel
from asr_s2s.registry import Registry
from asr_s2s.recognizer import Recognition, Recognizer, output_warning
from asr_s2s.transcription import AudioInput, FileResult, Segment, TranscribeOptions, Transcription, Word
from asr_s2s.vad import AudioSegment, stream_segments

log = logging.getLogger(__name__)

RECOGNIZER_CACHE = 4  # recognisers (built scorers) kept for recently used decoding options


# -- the transcriber -----------------------------------------------------------------
@dataclass
class _File:
    """Book-keeping for one input while its segments are read and decoded."""

    input: AudioInput
    source: Any  # the input as the caller passed it
    samples: int = 0  # read so far
    count: int = 0  # segments read
    decoded: dict[int, Segment] = field(default_factory=dict)
    read: bool = False
    error: AsrS2SError | None = None
    reported_s: float = 0.0  # seconds already reported to the progress callback

    @property
    def complete(self) -> bool:
        return self.read and (self.error is not None or len(self.decoded) == self.count)


@dataclass(frozen=True)
class _Piece:
    file: _File
    index: int
    segment: AudioSegment


class Transcriber:
    """Transcribes recordings of any length with one model. Build it with :func:`load_model`."""

    def __init__(
        self, model: ASRModel, registry: Registry, options: TranscribeOptions | None = None, model_id: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.registry = registry
        self.options = options if options is not None else TranscribeOptions()
        self.model_id = model_id
        self.device = torch.device(device)
        self._recognizers: deque[tuple[DecodeConfig, Recognizer]] = deque(maxlen=RECOGNIZER_CACHE)

    @property
    def seconds_per_state(self) -> float:
        """Seconds of audio per encoder frame (10 ms feature frames times the time reduction)."""
        return self.model.encoder.time_reduction * FRAME_SHIFT_MS / 1000

    def transcribe(
        self,
        audio: str | os.PathLike | bytes | np.ndarray | torch.Tensor,
        sample_rate: int | None = None,
        *,
        options: TranscribeOptions | None = None,
        beam_size: int | None = None,
        scorers: Mapping[str, float] | None = None,
        scorer_params: Mapping[str, Mapping[str, Any]] | None = None,
        lm: str | None = None,
        hotwords: Sequence[str] | None = None,
        max_length_ratio: float | None = None,
        min_length_ratio: float | None = None,
        length_normalize: bool | None = None,
        end_margin: float | None = None,
        pre_beam_ratio: float | None = None,
        eos_threshold: float | None = None,
        batch_seconds: float | None = None,
        precision: str | None = None,
        max_segment_s: float | None = None,
        min_pause_s: float | None = None,
        word_timestamps: bool | None = None,
        attention: bool | None = None,
    ) -> Transcription:
        """Transcribe one recording.

        :param audio: a path (any format :func:`~asr_s2s.audio.stream_audio` reads), the
            bytes of an audio file, a binary stream (read as it arrives, e.g. ``sys.stdin.buffer``),
            or samples ``(S,)``/``(S, C)`` at ``sample_rate`` Hz.
        :param options: base options (default: this transcriber's, from the package);
            each keyword below that is not None changes that option (:meth:`TranscribeOptions.with_overrides`).
            ``scorers`` and ``scorer_params`` are merged into the base ones (weight 0 turns a scorer off).
        :returns: the text, segments and words, and the options used.
        :raises AudioLoadError: for unreadable audio. :raises ConfigError: for bad options.
        """
        base = options if options is not None else self.options
        used = base.with_overrides(
            beam_size=beam_size, scorers=scorers, scorer_params=scorer_params, lm=lm, hotwords=hotwords,
            max_length_ratio=max_length_ratio, min_length_ratio=min_length_ratio, length_normalize=length_normalize,
            end_margin=end_margin, pre_beam_ratio=pre_beam_ratio, eos_threshold=eos_threshold,
            batch_seconds=batch_seconds, precision=precision,
            max_segment_s=max_segment_s, min_pause_s=min_pause_s, word_timestamps=word_timestamps, attention=attention,
        )
        name = (str(audio) if isinstance(audio, (str, os.PathLike)) else "<bytes>" if isinstance(audio, bytes)
                else "<stream>" if hasattr(audio, "read") else "<array>")
        ((result),) = list(self.transcribe_many([AudioInput(name, audio, sample_rate)], used))
        if result.error is not None:
            raise result.error
        return result.transcription

    def transcribe_many(
        self,
        inputs: Iterable[AudioInput | str | os.PathLike | bytes],
        options: TranscribeOptions | None = None,
        progress: Callable[[float], None] | None = None,
        num_workers: int = 0,
        *,
        on_batch: Callable[[list[tuple[Any, Segment]]], None] | None = None,
        cancelled: Callable[[Any], bool] | None = None,
        **overrides: Any,
    ) -> Iterator[FileResult]:
        """Transcribe many recordings, decoding segments of several files together; results in input order.

        Each input gives one :class:`FileResult`: its ``source`` is the input as
        passed, and either ``transcription`` is set (``ok``) or ``error`` says why
        the input could not be read; the other inputs go on. ``progress`` is called
        with the seconds of audio finished since its last call. ``overrides`` are the
        keywords of :meth:`transcribe` (``beam_size=1``, ``scorers={...}``, ...).

        ``num_workers`` threads read and resample the next inputs while the model
        decodes (each read-ahead input is held whole in memory); 0 streams every
        input in this thread, block by block.

        ``on_batch`` gets each decoded batch's ``(source, Segment)`` pairs, in order (for streaming); once
        ``cancelled(source)`` is true (asked per block and batch), that input stops (``TranscriptionCancelled``).

        :raises ConfigError: for bad options (before any input is read).
        """
        if num_workers < 0:
            raise ConfigError(f"num_workers must be 0 or more, got {num_workers}")
        options = (options if options is not None else self.options).with_overrides(**overrides)
        recognizer = self._recognizer(options)
        want_words = self._want_words(options)
        vad = options.segmentation
        limit = max(1, int(options.decode.batch_seconds * SAMPLE_RATE_HZ))
        files: deque[_File] = deque()
        batch: list[_Piece] = []
        for source, item, read_ahead in _read_ahead(inputs, num_workers):
            file = _File(item, source)
            files.append(file)
            try:
                blocks = _input_blocks(item) if read_ahead is None else read_ahead.result()
                blocks = self._counted(file, _until_cancelled(file, blocks, cancelled))
                for segment in stream_segments(blocks, vad):
                    longest = max([len(segment.samples), *(len(p.segment.samples) for p in batch)])
                    if batch and longest * (len(batch) + 1) > limit:
                        self._flush(batch, recognizer, options, want_words, on_batch, cancelled)
                        batch = []
                        yield from self._finished(files, options, progress)
                    batch.append(_Piece(file, file.count, segment))
                    file.count += 1
            except AsrS2SError as exc:
                file.error = exc
            except OSError as exc:
                file.error = AudioLoadError(f"{item.name}: cannot read: {exc}")
            file.read = True
            yield from self._finished(files, options, progress)
        if batch:
            self._flush(batch, recognizer, options, want_words, on_batch, cancelled)
        yield from self._finished(files, options, progress)

    # -- steps -----------------------------------------------------------------------
    def _recognizer(self, options: TranscribeOptions) -> Recognizer:
        decode = options.decode
        for known, recognizer in self._recognizers:
            if known == decode:
                return recognizer
        recognizer = Recognizer(self.model, decode, self.registry, device=self.device)
        self._recognizers.append((decode, recognizer))
        return recognizer

    def _want_words(self, options: TranscribeOptions) -> bool:
        if options.word_timestamps and self.model.ctc is None:
            raise ConfigError("word timestamps need a CTC head, and this model has none (model.ctc_weight is 0)")
        return options.word_timestamps is not False and self.model.ctc is not None

    @staticmethod
    def _counted(file: _File, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            file.samples += len(block)
            yield block

    def _flush(self, pieces: list[_Piece], recognizer: Recognizer, options: TranscribeOptions, want_words: bool,
               on_batch: Callable[[list[tuple[Any, Segment]]], None] | None,
               cancelled: Callable[[Any], bool] | None) -> None:
        """Decode the pieces of inputs that have not failed or been cancelled, and report them to ``on_batch``."""
        for piece in pieces:
            if cancelled is not None and piece.file.error is None and cancelled(piece.file.source):
                piece.file.error = TranscriptionCancelled(f"{piece.file.input.name}: cancelled")
        live = [p for p in pieces if p.file.error is None]
        if not live:
            return
        self._decode(live, recognizer, options, want_words)
        if on_batch is not None:
            on_batch([(p.file.source, p.file.decoded[p.index]) for p in live])

    @torch.inference_mode()
    def _decode(self, pieces: list[_Piece], recognizer: Recognizer, options: TranscribeOptions, want_words: bool) -> None:
        """Decode segments as one padded batch and store each one's :class:`Segment` in its file."""
        feats = [fbank(p.segment.samples) for p in pieces]
        lengths = torch.tensor([f.shape[0] for f in feats])
        states, state_lengths = recognizer.encode(pad_sequence(feats, batch_first=True), lengths)
        results = recognizer.decode_states(states, state_lengths, [f"{p.file.input.name}#{p.index}" for p in pieces])
        ctc = self.model.ctc_log_probs(states) if want_words else None
        for b, (piece, result) in enumerate(zip(pieces, results)):
            frames = int(state_lengths[b])
            piece.file.decoded[piece.index] = self._segment(
                piece, result, None if ctc is None else ctc[b, :frames], states[b : b + 1, :frames], options.attention
            )

    def _segment(self, piece: _Piece, result: Recognition, ctc: torch.Tensor | None, states: torch.Tensor,
                 keep_attention: bool) -> Segment:
        tok = self.model.tokenizer
        hyp = result.hypotheses[0] if result.hypotheses else None
        tokens = hyp.tokens if hyp is not None else ()
        start = piece.segment.start / SAMPLE_RATE_HZ
        end = piece.segment.end / SAMPLE_RATE_HZ
        words: tuple[Word, ...] = ()
        if ctc is not None:
            aligned = align_words(ctc, tokens, tok.tokens, blank=tok.blank_id)
            if aligned is None:
                log.warning("%s: segment %.2f-%.2f s holds more characters than CTC frames; no word times for it",
                            piece.file.input.name, start, end)
            else:
                step = self.seconds_per_state
                words = tuple(
                    Word(w.text, min(start + w.start * step, end), min(start + w.end * step, end), w.probability)
                    for w in aligned
                )
        attention = None
        if keep_attention:
            attention = result.attention if result.attention is not None else self._attention(states, tokens)
        text = " ".join(tok.decode(tokens).split())
        why = output_warning(text, end - start, ended=hyp is not None)
        if why is not None:
            log.warning("%s: segment %.2f-%.2f s: %s", piece.file.input.name, start, end, why)
        return Segment(
            piece.index, start, end, text, float(hyp.score) if hyp else 0.0,
            dict(hyp.scores) if hyp else {}, words, attention,
        )

    def _attention(self, states: torch.Tensor, tokens: Sequence[int]) -> np.ndarray:
        """Teacher-forced attention ``(U + 1, T')`` of the decoder over one segment's states ``(1, T', D)``."""
        tokens_in = torch.tensor([[self.model.tokenizer.sos_id, *tokens]], device=states.device)
        lengths = torch.tensor([states.shape[1]], device=states.device)
        _, weights = self.model.decoder(states, lengths, tokens_in)
        return weights[0].float().cpu().numpy()

    def _finished(self, files: deque[_File], options: TranscribeOptions, progress: Callable[[float], None] | None):
        """Report progress, and yield the results of the leading files that are complete."""
        if progress is not None:
            for file in files:
                done = file.samples / SAMPLE_RATE_HZ if file.complete else max(
                    (s.end for s in file.decoded.values()), default=0.0)
                if done > file.reported_s:
                    progress(done - file.reported_s)
                    file.reported_s = done
        while files and files[0].complete:
            file = files.popleft()
            if file.error is not None:
                yield FileResult(file.source, file.input.name, error=file.error)
                continue
            segments = tuple(file.decoded[i] for i in range(file.count))
            text = " ".join(s.text for s in segments if s.text)
            transcription = Transcription(
                file.input.name, text, segments, file.samples / SAMPLE_RATE_HZ, self.model_id, options,
            )
            yield FileResult(file.source, file.input.name, transcription=transcription)


def _until_cancelled(file: _File, blocks: Iterable[np.ndarray], cancelled: Callable[[Any], bool] | None,
                     ) -> Iterator[np.ndarray]:
    """``blocks`` until ``cancelled(file.source)``, asked before each one is read."""
    if cancelled is None:
        yield from blocks
        return
    iterator = iter(blocks)
    while not cancelled(file.source):
        block = next(iterator, None)
        if block is None:
            return
        yield block
    close = getattr(iterator, "close", None)
    if close is not None:
        close()  # a stream's file (or ffmpeg) is closed now, not when the generator is collected
    raise TranscriptionCancelled(f"{file.input.name}: cancelled")


def _input_blocks(item: AudioInput) -> Iterable[np.ndarray]:
    """16 kHz mono blocks of an input: a file or a binary stream streamed, bytes or an array at once."""
    if isinstance(item.audio, bytes):
        return [load_audio(item.audio)]
    if isinstance(item.audio, (np.ndarray, torch.Tensor)):
        return [array_to_mono(item.audio, item.sample_rate, item.name)]
    if hasattr(item.audio, "read"):  # a binary stream (stdin): streamed as it arrives, named as the input
        return stream_audio(item.audio, name=item.name)
    return stream_audio(item.audio)


def _read_whole(item: AudioInput) -> list[np.ndarray]:
    """Every 16 kHz mono block of an input, read at once (in a read-ahead thread)."""
    return list(_input_blocks(item))


def _read_ahead(inputs: Iterable[Any], workers: int) -> Iterator[tuple[Any, AudioInput, Future | None]]:
    """``(source, AudioInput, future of its blocks or None)`` in input order; ``workers`` inputs are read ahead."""
    if workers == 0:
        for source in inputs:
            yield source, AudioInput.of(source), None
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="asr-s2s-read") as pool:
        pending: deque[tuple[Any, AudioInput, Future]] = deque()
        for source in inputs:
            item = AudioInput.of(source)
            pending.append((source, item, pool.submit(_read_whole, item)))
            if len(pending) > workers:
                yield pending.popleft()
        while pending:
            yield pending.popleft()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", disable_plugins: Sequence[str] = (),
               registry: Registry | None = None) -> Transcriber:
    """Load a model package as a :class:`Transcriber` whose default options are the package's decode config.

    :param disable_plugins: plugin entry points not to load (as ``--disable-plugin``).
    :raises ModelPackageError: naming the missing, corrupt or mismatched file.
    """
    from asr_s2s.package import load_package, model_id_of
    from asr_s2s.registry import get_plugin_manager

    if registry is None:
        registry = Registry(get_plugin_manager(disable=disable_plugins))
    model, config = load_package(path, registry)
    options = TranscribeOptions(decode=config.decode)
    return Transcriber(model, registry, options, model_id=model_id_of(path), device=device)
