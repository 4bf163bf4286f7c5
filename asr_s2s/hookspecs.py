"""The hooks a plugin implements to contribute components.

Every hook returns a list of component classes. Each class declares its own
``name`` (a ``ClassVar[str]``) by which configs and the CLI refer to it. The
built-in components in ``asr_s2s_plugins`` implement these hooks exactly as a
third-party package does, and are found through the ``asr_s2s`` entry-point group.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "asr_s2s"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def asr_s2s_register_encoders() -> list[type]:
    """Contribute encoder classes (subclasses of :class:`asr_s2s.interfaces.Encoder`).

    An encoder maps features ``(B, T, F)`` with lengths ``(B,)`` to states
    ``(B, T', D)`` with lengths ``(B,)``, where ``T' = ceil(T / time_reduction)``.
    Its constructor takes ``input_dim`` (F) plus its own keyword params.

    :returns: a list of encoder classes, each with a unique ``name``.
    """


@hookspec
def asr_s2s_register_decoders() -> list[type]:
    """Contribute decoder classes (subclasses of :class:`asr_s2s.interfaces.Decoder`).

    A decoder maps encoder states ``(B, T', D)``, their lengths ``(B,)`` and
    input tokens ``(B, U)`` to logits ``(B, U, V)``, and offers a batched
    incremental ``init_state``/``step``/``select`` API for search.
    Its constructor takes ``encoder_dim`` (D) and ``vocab_size`` (V) plus its own params.

    :returns: a list of decoder classes, each with a unique ``name``.
    """


@hookspec
def asr_s2s_register_lms() -> list[type]:
    """Contribute language-model classes (subclasses of :class:`asr_s2s.interfaces.LanguageModel`).

    A language model maps input tokens ``(B, U)`` (starting with ``<sos>``) to
    next-token logits ``(B, U, V)`` and offers a batched incremental
    ``init_state``/``step``/``select`` API, so that the ``lm`` scorer can fuse
    it into beam search. ``asr-s2s train-lm`` builds one from config.
    Its constructor takes ``vocab_size`` (V) plus its own params.

    :returns: a list of language-model classes, each with a unique ``name``.
    """


@hookspec
def asr_s2s_register_scorers() -> list[type]:
    """Contribute beam-search scorer classes (subclasses of :class:`asr_s2s.interfaces.Scorer`).

    A scorer adds a weighted log-probability ``(N, V)`` over the vocabulary
    (full scorer) or over ``K`` pre-beam candidates ``(N, K)`` (partial scorer)
    for ``N`` hypotheses at once. It is built with
    ``Scorer.from_model(model, **params)``.

    :returns: a list of scorer classes, each with a unique ``name``.
    """


@hookspec
def asr_s2s_register_augmentations() -> list[type]:
    """Contribute training-data augmentation classes (subclasses of :class:`asr_s2s.interfaces.Augmentation`).

    An augmentation changes one training utterance on its way to the features,
    in the data workers, and never at validation or decoding. Its ``stage`` says
    where: ``"audio"`` maps a waveform ``(S,)`` at 16 kHz to a waveform ``(S',)``
    (noise, reverberation, codecs, speed, edge framing); ``"filterbank"`` changes
    how the fbank is computed (VTLP's frequency warp); ``"features"`` maps the
    log-mel features ``(T, F)`` of one utterance to ``(T', F)`` (SpecAugment).
    Batches ``(B, T, F)`` are padded only after every augmentation has run. It is
    built as ``cls(**params)`` (plus ``context=`` when its constructor takes one)
    from a ``train.augment`` entry ``{name: ..., prob: ..., **params}``.

    :returns: a list of augmentation classes, each with a unique ``name``.
    """
