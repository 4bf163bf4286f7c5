"""SpeechBrain's decoding real-time factor on the reference model, for ``decode_speed.py --peers``.

Usage (with the peer environment made by benchmarks/peers/setup.sh):
    benchmarks/peers/.venv/bin/python benchmarks/peers/speechbrain_reference.py FEATS.pt \\
        [--threads N] [--repeats 3] [--beam-size 10] [--spec JSON]

FEATS.pt is a ``torch.save``d list of ``(T, 80)`` float feature tensors at 100
frames per second. The script builds benchmarks/common.py's REFERENCE model out
of SpeechBrain modules, with random weights (``torch.manual_seed(0)``):

- encoder: ``speechbrain.nnet.RNN.LSTM`` layers (bidirectional, relative
  lengths, so padding is packed away), ``base_layers`` at the frame rate and
  ``pyramid_layers`` that first join pairs of consecutive frames, exactly as
  plugins/pblstm.py does (an odd length pairs its last frame with zeros);
- ``AttentionalRNNDecoder`` (LSTM, location attention), an ``Embedding`` and
  the output and CTC heads as ``speechbrain.nnet.linear.Linear``;
- search: ``S2SRNNGreedySearcher`` and ``S2SRNNBeamSearcher`` with
  ``CTCScorer`` as a partial scorer of ``ScorerBuilder`` (``scorer_beam_scale``
  1.5, as SpeechBrain's RNN recipes and our ``pre_beam_ratio`` have it).

``<eos>`` is suppressed so that every search runs as many decoder steps as the
encoder has frames: the beam searcher gets ``min_decode_ratio`` =
``max_decode_ratio`` = 1.0. SpeechBrain scales both by the padded encoder
length (``enc_states.shape[1]``), so in a batch every utterance runs as many
steps as the longest. Its greedy searcher loops ``range(min_steps,
max_steps)`` and has no minimum length, so it gets ratios 0.0 and 1.0 and an
``<eos>`` index outside the vocabulary, which no step can pick.

It prints one JSON object: ``rows`` {label: RTF} (decode wall time / audio
time, encoder included, median of ``--repeats`` after one warm-up, under
``torch.inference_mode``; the row "encoder only, batch" times the encoder
alone), ``versions``, ``threads`` and ``parameters``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

import torch
from speechbrain.decoders import CTCScorer, S2SRNNBeamSearcher, S2SRNNGreedySearcher, ScorerBuilder
from speechbrain.nnet.embedding import Embedding
from speechbrain.nnet.linear import Linear
from speechbrain.nnet.RNN import LSTM, AttentionalRNNDecoder
from torch.nn.utils.rnn import pad_sequence

FRAMES_PER_SECOND = 100
BLANK, BOS, EOS = 0, 1, 2  # SpeechBrain's CTC scorer wants three distinct ids (ours share <sos/eos>)
SCORER_BEAM_SCALE = 1.5  # CTC scores the best int(1.5 * beam) tokens per hypothesis
CTC_WEIGHT = 0.3


@dataclasses.dataclass(frozen=True)
class Spec:
    """The reference model's sizes; decode_speed.py passes them from benchmarks/common.py's REFERENCE."""

    features: int = 80
    encoder_hidden: int = 320  # units per direction
    base_layers: int = 1
    pyramid_layers: int = 3
    decoder_hidden: int = 320
    embed_dim: int = 320
    attention_dim: int = 320
    conv_channels: int = 10
    conv_kernel: int = 201  # filter width in encoder frames (odd)
    tokens: int = 32


def relative(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """SpeechBrain relative lengths (float64) that give back ``lengths`` both truncated and rounded.

    SpeechBrain's LSTM packs ``int(rel * T)`` frames and its searchers attend to
    ``round(rel * T')``; the nudge up keeps float error from losing a frame.
    """
    rel = lengths.double() / total
    short = (rel * total).long() < lengths
    return torch.where(short, torch.nextafter(rel, torch.full_like(rel, 2.0)), rel)


def pair_frames(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate consecutive frame pairs: ``(B, T, D)`` -> ``(B, ceil(T/2), 2D)``, lengths ``ceil(l/2)``."""
    if x.shape[1] % 2:
        x = torch.nn.functional.pad(x, (0, 0, 0, 1))
    b, t, d = x.shape
    return x.reshape(b, t // 2, 2 * d), torch.div(lengths + 1, 2, rounding_mode="floor")


class PyramidalEncoder(torch.nn.Module):
    """Bidirectional ``speechbrain.nnet.RNN.LSTM`` layers; each pyramid layer first halves time by :func:`pair_frames`."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.base_layers = spec.base_layers
        layers, size = [], spec.features
        for i in range(spec.base_layers + spec.pyramid_layers):
            input_size = 2 * size if i >= spec.base_layers else size
            layers.append(LSTM(spec.encoder_hidden, input_size=input_size, bidirectional=True))
            size = 2 * spec.encoder_hidden
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param feats: ``(B, T, F)``; :param lengths: ``(B,)`` frames. :returns: states and their lengths."""
        x = feats
        for i, layer in enumerate(self.layers):
            if i >= self.base_layers:
                x, lengths = pair_frames(x, lengths)
            x, _ = layer(x, lengths=relative(lengths, x.shape[1]))
        return x, lengths


class Reference(torch.nn.Module):
    """The reference model out of SpeechBrain modules, and its searchers."""

    def __init__(self, spec: Spec, beam_size: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        encoder_dim = 2 * spec.encoder_hidden
        self.encoder = PyramidalEncoder(spec)
        self.embedding = Embedding(spec.tokens, spec.embed_dim)
        self.decoder = AttentionalRNNDecoder(
            rnn_type="lstm", attn_type="location", hidden_size=spec.decoder_hidden, attn_dim=spec.attention_dim,
            num_layers=1, enc_dim=encoder_dim, input_size=spec.embed_dim,
            channels=spec.conv_channels, kernel_size=spec.conv_kernel // 2,  # SpeechBrain's width is 2 * kernel_size + 1
        )
        self.output = Linear(spec.tokens, input_size=spec.decoder_hidden)
        self.ctc = Linear(spec.tokens, input_size=encoder_dim)
        modules = {"embedding": self.embedding, "decoder": self.decoder, "linear": self.output}
        self.greedy = S2SRNNGreedySearcher(
            **modules, bos_index=BOS, eos_index=spec.tokens, min_decode_ratio=0.0, max_decode_ratio=1.0)
        scorer = ScorerBuilder(
            partial_scorers=[CTCScorer(ctc_fc=self.ctc, blank_index=BLANK, eos_index=EOS)],
            weights={"ctc": CTC_WEIGHT}, scorer_beam_scale=SCORER_BEAM_SCALE)
        self.beam = S2SRNNBeamSearcher(
            **modules, bos_index=BOS, eos_index=EOS, min_decode_ratio=1.0, max_decode_ratio=1.0, beam_size=beam_size,
            scorer=scorer, using_eos_threshold=False, length_normalization=False)
        self.eval()

    def decode(self, searcher: torch.nn.Module, feats: torch.Tensor, lengths: torch.Tensor) -> list:
        """Encode a padded batch and search it; returns the token sequences."""
        states, state_lengths = self.encoder(feats, lengths)
        hyps, *_ = searcher(states, relative(state_lengths, states.shape[1]))
        return hyps


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rtf(model: Reference, searcher: torch.nn.Module | None, utterances: list[torch.Tensor], batched: bool,
        repeats: int) -> float:
    """Median RTF of decoding ``utterances`` all in one padded batch, or one at a time; ``searcher`` None
    times the encoder alone."""
    groups = [utterances] if batched else [[u] for u in utterances]
    padded = [(pad_sequence(g, batch_first=True), torch.tensor([u.shape[0] for u in g])) for g in groups]

    def run() -> None:
        for feats, lengths in padded:
            if searcher is None:
                model.encoder(feats, lengths)
            else:
                model.decode(searcher, feats, lengths)

    seconds = sum(u.shape[0] for u in utterances) / FRAMES_PER_SECOND
    return median_time(run, repeats) / seconds


def versions() -> dict[str, str]:
    """Versions of the peer's stack."""
    return {"speechbrain": version("speechbrain"), "torch": torch.__version__,
            "torchaudio": version("torchaudio"), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", help="torch.save'd list of (T, 80) feature tensors")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam-size", type=int, default=10)
    parser.add_argument("--spec", default="{}", help="JSON of Spec fields that differ from the reference model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = Spec(**json.loads(args.spec))
    utterances = [u.float() for u in torch.load(args.features)]
    model = Reference(spec, args.beam_size)
    k = args.beam_size
    setups = [("greedy, batch", model.greedy, True),
              (f"beam {k} + ctc {CTC_WEIGHT:g}, batch", model.beam, True),
              (f"beam {k} + ctc {CTC_WEIGHT:g}, one at a time", model.beam, False),
              ("encoder only, batch", None, True)]
    with torch.inference_mode():
        rows = {label: rtf(model, searcher, utterances, batched, args.repeats) for label, searcher, batched in setups}
    print(json.dumps({"rows": rows, "versions": versions(), "threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
