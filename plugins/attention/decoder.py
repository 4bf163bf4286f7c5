"""The LAS speller: an LSTM decoder that attends over the encoder states (:mod:`.attention`) before each step."""

from __future__ import annotations

import torch
from torch import nn

from asr_s2s.errors import ConfigError
from asr_s2s.interfaces import Decoder, LanguageModel
from asr_s2s.layers import length_mask

from .attention import ATTENTION_TYPES, Attention


def _lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An LSTM cell's update from its summed gates ``(N, 4H)`` (PyTorch's order: input, forget, cell, output)
    and cell state ``(N, H)``. :returns: the new ``h`` and ``c``, ``(N, H)`` each."""
    hidden = c.shape[1]
    g = torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    gates = gates.sigmoid_()
    c = torch.addcmul(gates[:, hidden : 2 * hidden] * c, gates[:, :hidden], g)
    return gates[:, 3 * hidden :] * torch.tanh(c), c


class AttentionDecoder(Decoder):
    """LSTM speller in ESPnet's order: attend with the previous state, then run the LSTM.

    :param encoder_dim: D (supplied by the toolkit).
    :param vocab_size: V (supplied by the toolkit).
    :param sos_id: start token id (supplied by the toolkit).
    :param hidden_size: LSTM units per layer.
    :param num_layers: LSTM layers.
    :param embed_dim: token embedding size.
    :param attention_type: ``location`` (default) or ``content`` (MLP attention).
    :param attention_dim: attention MLP size.
    :param conv_channels: location filters (ignored for ``content``).
    :param conv_kernel: location filter width in encoder frames, odd.
    :param dropout: dropout on the LSTM output.
    :param sampling_rate: scheduled sampling: the chance of feeding back the
        model's own prediction instead of the reference token while training.
    """

    name = "attention"

    def __init__(
        self,
        encoder_dim: int,
        vocab_size: int,
        sos_id: int,
        hidden_size: int = 320,
        num_layers: int = 1,
        embed_dim: int = 128,
        attention_type: str = "location",
        attention_dim: int = 256,
        conv_channels: int = 10,
        conv_kernel: int = 101,
        dropout: float = 0.1,
        sampling_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {attention_type!r}")
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must be in [0, 1], got {sampling_rate}")
        self.vocab_size = vocab_size
        self.sos_id = sos_id
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.sampling_rate = sampling_rate
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.cells = nn.ModuleList(
            nn.LSTMCell(embed_dim + encoder_dim if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )
        channels = conv_channels if attention_type == "location" else 0
        self.attention = Attention(encoder_dim, hidden_size, attention_dim, channels, conv_kernel)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size + encoder_dim, vocab_size)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        n = states.shape[0]
        mask = length_mask(state_lengths.to(states.device), states.shape[1])
        zeros = states.new_zeros(self.num_layers, n, self.hidden_size)
        return {
            "memory": states,
            "projected": self.attention.project_memory(states),
            "mask": mask,
            "h": zeros,
            "c": zeros.clone(),
            "attention": mask.to(states.dtype) / mask.sum(-1, keepdim=True).clamp_min(1).to(states.dtype),
            **self._location_matrix(states.shape[1]),
        }

    def _location_matrix(self, frames: int) -> dict[str, torch.Tensor]:
        """``{"location_matrix": ...}`` where it is cheaper than the convolution.

        Under autocast the matrix is cast once here: cast by each step's product, every
        step would keep its own copy for the backward pass.
        """
        matrix = self.attention.location_matrix(frames)
        if matrix is None:
            return {}
        device_type = matrix.device.type
        if torch.is_autocast_enabled(device_type):
            matrix = matrix.to(torch.get_autocast_dtype(device_type))
        return {"location_matrix": matrix}

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> dict[str, torch.Tensor]:
        """``beam`` hypotheses per utterance; memory, its projection and mask stay ``(B, ...)``."""
        state = self.init_state(states, state_lengths)
        if beam == 1:
            return state
        return dict(
            state,
            h=state["h"].repeat_interleave(beam, 1),
            c=state["c"].repeat_interleave(beam, 1),
            attention=state["attention"].repeat_interleave(beam, 0),
        )

    def _advance(self, embedded: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One teacher-forced step from embedded tokens ``(N, E)``; returns the output layer's input ``(N, H + D)``."""
        context, weights = self.attention(
            state["memory"], state["projected"], state["mask"], state["h"][-1], state["attention"],
            state.get("location_matrix"),
        )
        x, hs, cs = self._layers(torch.cat([embedded, context], dim=-1), state, [], [])
        new_state = dict(state, h=torch.stack(hs), c=torch.stack(cs), attention=weights)
        return torch.cat([x, context], dim=-1), new_state

    def _layers(
        self, x: torch.Tensor, state: dict[str, torch.Tensor], hs: list[torch.Tensor], cs: list[torch.Tensor],
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run LSTM layers ``len(hs)`` and up from input ``x`` ``(N, *)``, appending each layer's ``h`` and ``c``
        ``(N, H)`` to ``hs`` and ``cs``; returns the top layer's output (after dropout) and both lists."""
        for layer in range(len(hs), self.num_layers):
            h, c = self.cells[layer](x, (state["h"][layer], state["c"][layer]))
            hs.append(h)
            cs.append(c)
            x = self.dropout(h)
        return x, hs, cs

    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if torch.is_grad_enabled():
            features, state = self._advance(self.embed(tokens), state)
            logits = self.output(features)
        else:
            logits, state = self._search_advance(tokens, self._search_state(state))
        return torch.log_softmax(logits, dim=-1), state

    def _search_advance(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One search step from tokens ``(N,)``, with the tables of :meth:`_search_state`; returns logits ``(N, V)``.

        The same sums as :meth:`_advance` and the output layer, in another order: with ``mixed``
        memory the attention weights read ``[context @ W_ic^T, context @ W_oc^T]`` ``(N, 4H + V)``
        at once, where ``W_ic`` and ``W_oc`` are the first LSTM layer's and the output layer's
        weights on the context; otherwise they read the context ``(N, D)``, as in training.
        """
        gates_in = state["gate_table"].index_select(0, tokens)  # (N, 4H)
        mixed = "mixed_memory" in state
        read, weights = self.attention(
            state["mixed_memory"] if mixed else state["memory"], state["projected"], state["mask"], state["h"][-1],
            state["attention"], state.get("location_matrix"), state.get("scratch"),
        )
        width, h0 = 4 * self.hidden_size, state["h"][0]
        if mixed:
            gates = torch.addmm(gates_in.add_(read[:, :width]), h0, state["recurrent_weight"].t())
        else:
            gates = torch.addmm(gates_in, torch.cat([read, h0], dim=-1), state["gate_weight"].t())
        h, c = _lstm_cell(gates, state["c"][0])
        x, hs, cs = self._layers(h, state, [h], [c])
        if mixed:
            logits = torch.addmm(read[:, width:] + self.output.bias, x, state["output_weight"].t())
        else:
            logits = self.output(torch.cat([x, read], dim=-1))
        return logits, dict(state, h=torch.stack(hs), c=torch.stack(cs), attention=weights)

    def _search_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What search adds to the state, once per search (at its first step):

        - ``gate_table`` ``(V, 4H)``: every token's embedding through the first LSTM layer's input
          weights, plus both biases, so that a step adds the tokens' rows instead of embedding them.
        - Where it costs fewer products per step (``T' (4H + V - D) < D (4H + V)``: up to about 100 s
          of audio for the recipe models), ``mixed_memory`` ``(B, T', 4H + V)``: the encoder states
          through the first layer's and the output layer's weights on the context, which the
          attention weights then read in place of the states (their ``(N, D) x (D, 4H + V)`` product
          per step becomes ``(N, T') x (T', 4H + V)``), with the ``recurrent_weight`` ``(4H, H)`` and
          the ``output_weight`` ``(V, H)`` on the top layer. Otherwise ``gate_weight`` ``(4H, D + H)``:
          the context and recurrent weights side by side, for one ``[context, h]`` product.
        - ``scratch``: the attention's pre-activation tensor, sized for the first step's ``N``; later
          steps (fewer rows once finished utterances are dropped) reuse it.
        """
        if "gate_table" in state:
            return state
        cell, embed_dim, dtype = self.cells[0], self.embed.embedding_dim, state["h"].dtype
        table = torch.addmm(cell.bias_ih + cell.bias_hh, self.embed.weight, cell.weight_ih[:, :embed_dim].t())
        memory, projected = state["memory"], state["projected"]
        frames, dim, width = memory.shape[1], memory.shape[2], 4 * self.hidden_size + self.vocab_size
        if frames * (width - dim) < dim * width:
            on_context = torch.cat([cell.weight_ih[:, embed_dim:], self.output.weight[:, self.hidden_size :]])
            tables = dict(mixed_memory=torch.matmul(memory, on_context.t().to(memory.dtype)),
                          recurrent_weight=cell.weight_hh.to(dtype),
                          output_weight=self.output.weight[:, : self.hidden_size].to(dtype))
        else:
            tables = dict(gate_weight=torch.cat([cell.weight_ih[:, embed_dim:], cell.weight_hh], dim=1).to(dtype))
        return dict(state, gate_table=table.to(dtype), **tables,
                    scratch=projected.new_empty(state["h"].shape[1] * projected.shape[1] * projected.shape[2]))

    def select(self, state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(
            state,
            h=state["h"].index_select(1, index),
            c=state["c"].index_select(1, index),
            attention=state["attention"].index_select(0, index),
        )

    def compact(self, state: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keep hypotheses ``rows`` ``(M,)`` (whole utterances' blocks) and those utterances' memory."""
        beam = state["h"].shape[1] // state["memory"].shape[0]
        utterances = rows[::beam] // beam  # rows holds whole blocks of beam rows
        per_utterance = {key: state[key].index_select(0, utterances)
                         for key in ("memory", "projected", "mask", "mixed_memory") if key in state}
        return dict(
            state,
            **per_utterance,
            h=state["h"].index_select(1, rows),
            c=state["c"].index_select(1, rows),
            attention=state["attention"].index_select(0, rows),
        )

    def init_from_language_model(self, lm: LanguageModel) -> None:
        """Start from an ``lstm`` LM of the same sizes: embedding, LSTM and output weights.

        The LSTM's input weights on the context and the output weights on the
        context keep their initialisation: with a zero context, the decoder
        computes exactly the LM.
        """
        if getattr(lm, "name", None) != "lstm":  # the built-in LSTM LM, by its registered name
            raise ConfigError(f"the attention decoder starts only from an 'lstm' language model, got {lm.name!r}")
        embed_dim, lm_embed_dim = self.embed.embedding_dim, lm.embed.embedding_dim
        sizes = {
            "vocabulary size": (self.vocab_size, lm.embed.num_embeddings),
            "embed_dim": (embed_dim, lm_embed_dim),
            "hidden_size": (self.hidden_size, lm.hidden_size),
            "num_layers": (self.num_layers, lm.num_layers),
        }
        differ = [f"{name} {mine} vs the LM's {theirs}" for name, (mine, theirs) in sizes.items() if mine != theirs]
        if differ:
            raise ConfigError(
                "the decoder and the language model differ in " + ", ".join(differ)
                + "; give model.decoder the LM's sizes or train an LM with the decoder's"
            )
        with torch.no_grad():
            self.embed.weight.copy_(lm.embed.weight)
            for layer, cell in enumerate(self.cells):
                inputs = embed_dim if layer == 0 else self.hidden_size
                cell.weight_ih[:, :inputs].copy_(getattr(lm.lstm, f"weight_ih_l{layer}"))
                cell.weight_hh.copy_(getattr(lm.lstm, f"weight_hh_l{layer}"))
                cell.bias_ih.copy_(getattr(lm.lstm, f"bias_ih_l{layer}"))
                cell.bias_hh.copy_(getattr(lm.lstm, f"bias_hh_l{layer}"))
            self.output.weight[:, : self.hidden_size].copy_(lm.output.weight)
            self.output.bias.copy_(lm.output.bias)

    def forward(
        self,
        states: torch.Tensor,
        state_lengths: torch.Tensor,
        tokens_in: torch.Tensor,
        token_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.init_state(states, state_lengths)
        embedded = self.embed(tokens_in)  # (B, U, E)
        sampling = self.training and self.sampling_rate > 0
        features, weights = [], []
        for u in range(tokens_in.shape[1]):
            emb = embedded[:, u]
            if sampling and u > 0:
                sampled = torch.rand(tokens_in.shape[0], device=tokens_in.device) < self.sampling_rate
                with torch.no_grad():
                    predicted_tokens = self.output(features[-1]).argmax(-1)
                predicted = self.embed(predicted_tokens)
                emb = torch.where(sampled.unsqueeze(-1), predicted, emb)
            step_features, state = self._advance(emb, state)
            features.append(step_features)
            weights.append(state["attention"])
        # one output product for all steps: cheaper than U small ones and their U weight-gradient sums
        return self.output(torch.stack(features, dim=1)), torch.stack(weights, dim=1)
