"""A character LSTM language model (``lm`` kind ``lstm``) and the ``lm`` scorer that fuses one in."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import LanguageModel, Scorer

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel


class LSTMLanguageModel(LanguageModel):
    """Embedding, stacked LSTM, linear output (Mikolov-style RNN LM).

    :param vocab_size: V (supplied by the toolkit).
    :param embed_dim: token embedding size.
    :param hidden_size: LSTM units per layer.
    :param num_layers: LSTM layers.
    :param dropout: dropout on the embeddings and between and after the LSTM layers.
    """

    name = "lstm"

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 512, num_layers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.num_layers, self.hidden_size = num_layers, hidden_size

    def forward(self, tokens_in: torch.Tensor) -> torch.Tensor:
        """:param tokens_in: ``(B, U)``. :returns: logits ``(B, U, V)``."""
        hidden, _ = self.lstm(self.dropout(self.embed(tokens_in)))
        return self.output(self.dropout(hidden))

    def init_state(self, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Zero ``h`` and ``c``, each ``(layers, N, H)``."""
        zeros = torch.zeros(self.num_layers, n, self.hidden_size, device=device, dtype=self.output.weight.dtype)
        return {"h": zeros, "c": zeros.clone()}

    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:param tokens: ``(N,)``. :returns: log-probabilities ``(N, V)`` and the new state."""
        hidden, (h, c) = self.lstm(self.embed(tokens).unsqueeze(1), (state["h"], state["c"]))
        return torch.log_softmax(self.output(hidden[:, 0]), dim=-1), {"h": h, "c": c}

    def select(self, state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather rows ``index`` ``(N,)`` of ``h`` and ``c``."""
        return {key: value.index_select(1, index) for key, value in state.items()}


class LMScorer(Scorer):
    """Shallow fusion: a language model package's next-token log-probabilities ``(N, V)``.

    :param path: a package written by ``asr-s2s train-lm`` (``EXP_DIR/lm``) with
        the same tokens as the acoustic model.
    """

    name = "lm"
    path_params = ("path",)

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm

    @classmethod
    def from_model(cls, model: ASRModel, *, path: str) -> LMScorer:
        from asr_s2s.plugin_api import load_language_model

        return cls(load_language_model(model, path))

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The LM state before ``<sos>`` for ``N`` rows (the encoder states give only N and the device)."""
        return self.init_beam_state(states, state_lengths, 1)

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> dict[str, torch.Tensor]:
        return self.lm.init_state(states.shape[0] * beam, states.device)

    def score(self, prefix: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Feed each hypothesis's last token ``prefix[:, -1]``; :returns: ``(N, V)`` and the new state."""
        return self.lm.step(prefix[:, -1], state)

    def select(self, state: dict[str, torch.Tensor], index: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.lm.select(state, index)

    def compact(self, state: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """An LM state holds no per-utterance data: dropping rows is a plain gather."""
        return self.lm.select(state, rows)


@hookimpl
def asr_s2s_register_lms() -> list[type]:
    return [LSTMLanguageModel]


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [LMScorer]
