"""The LAS speller: an LSTM decoder with location-aware or content-based attention."""

from __future__ import annotations

import torch
from torch import nn

from asr_s2s.errors import ConfigError
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Decoder, LanguageModel
from asr_s2s.layers import length_mask

ATTENTION_TYPES = ("location", "content")


# Training and decoding replace the location convolution by a Toeplitz matrix product
# while the padded utterance spans at most this many kernel widths (frames / taps), and
# the matrix holds at most this many elements (32 MB in fp32).
TOEPLITZ_MAX_SPAN = 4
TOEPLITZ_MAX_ELEMENTS = 1 << 23


class Attention(nn.Module):
    """Additive attention (Bahdanau); location-aware when ``conv_channels > 0`` (Chorowski et al. 2015).

    Energies are ``w^T tanh(h) + b`` with ``h = W m_t + V q + U (F * a_prev)_t + c``, computed as
    ``2 w^T sigmoid(2h) + b``. Since ``tanh(x) = 2 sigmoid(2x) - 1`` the two differ by the same
    ``sum(w)`` at every frame, which the softmax ignores, so the weights are the same function of
    the parameters; doubling is exact in floating point, and PyTorch's sigmoid ran 6x faster than
    its tanh over the ``(N, T', A)`` pre-activations on the CPU (a full search step 1.9x, beam 10 +
    CTC on the reference model). ``W m + c`` is computed once per utterance by :meth:`project_memory`.
    """

    def __init__(self, memory_dim: int, query_dim: int, attention_dim: int, conv_channels: int, conv_kernel: int) -> None:
        super().__init__()
        self.memory_proj = nn.Linear(memory_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.energy = nn.Linear(attention_dim, 1)
        self.location = conv_channels > 0
        if self.location:
            if conv_kernel % 2 == 0:
                raise ValueError(f"conv_kernel must be odd, got {conv_kernel}")
            self.conv = nn.Conv1d(1, conv_channels, conv_kernel, padding=conv_kernel // 2, bias=False)
            self.location_proj = nn.Linear(conv_channels, attention_dim, bias=False)

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        """The memory's share of ``2h``: ``2 (W m + c)``. :param memory: ``(N, T', D)``. :returns: ``(N, T', A)``."""
        return self.memory_proj(memory).mul(2.0)

    def location_matrix(self, frames: int) -> torch.Tensor | None:
        """The location filters as one ``(T', T' * C)`` Toeplitz matrix, or None where the convolution is cheaper.

        ``previous @ matrix`` viewed as ``(N, T', C)`` equals the zero-padded
        convolution of the previous weights, already in the layout the location
        projection reads. On the 2-core CPU, for 80 hypotheses and 10 filters,
        the product ran 7.9x faster than oneDNN's single-input-channel
        convolution at ``T' = 0.6 W`` (the reference model: kernel 201), 2x at
        ``2.5 W`` and 0.7-0.8x from ``5 W``, where its ``T'^2 C`` products
        outweigh the convolution's ``T' W C``; hence ``TOEPLITZ_MAX_SPAN``.
        Training differentiates through it (the matrix is built once per batch
        from the filters): the recipe model's teacher-forced decoder, forward and
        backward, ran 1.2x faster at ``T' = 2.3 W``, 1.2x at ``4 W`` and broke
        even near ``6.5 W``.
        """
        if not self.location or frames == 0:
            return None
        channels, _, kernel = self.conv.weight.shape
        if frames > TOEPLITZ_MAX_SPAN * kernel or frames * frames * channels > TOEPLITZ_MAX_ELEMENTS:
            return None
        pad, device = kernel // 2, self.conv.weight.device
        positions = torch.arange(frames, device=device)
        offset = positions.view(frames, 1) - positions.view(1, frames) + pad  # [s, t]: tap s - t + pad
        taps = self.conv.weight[:, 0].index_select(1, offset.clamp(0, kernel - 1).view(-1))
        inside = ((offset >= 0) & (offset < kernel)).view(1, -1).to(taps)
        matrix = (taps * inside).view(-1, frames, frames)  # (C, T' s, T' t)
        return matrix.permute(1, 2, 0).reshape(frames, frames * matrix.shape[0])  # column t * C + c

    def forward(
        self,
        memory: torch.Tensor,
        projected: torch.Tensor,
        mask: torch.Tensor,
        query: torch.Tensor,
        previous: torch.Tensor,
        location_matrix: torch.Tensor | None = None,
        scratch: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend once, for ``N = B * K`` queries over ``B`` utterances (``K`` hypotheses each, utterance-major).

        Training has ``K = 1``; beam search keeps each utterance's memory once
        and attends with its ``K`` hypotheses together.

        :param memory: ``(B, T', D)`` encoder states.
        :param projected: ``(B, T', A)`` from :meth:`project_memory`.
        :param mask: ``(B, T')`` True on valid frames.
        :param query: ``(N, Q)`` decoder state.
        :param previous: ``(N, T')`` previous attention weights.
        :param location_matrix: ``(T', T' * C)`` from :meth:`location_matrix`, or None to convolve.
        :param scratch: without autograd, a float tensor of at least ``N * T' * A`` elements that
            holds the pre-activations (its contents are overwritten), so that decoding does not
            allocate (and page in) a fresh ``(N, T', A)`` tensor at every step; None allocates.
        :returns: context ``(N, D)`` and weights ``(N, T')``.
        """
        b, frames, dim = projected.shape
        n = query.shape[0]
        k = n // b
        query_term = self.query_proj(query).view(b, k, 1, dim)
        loc = self._location_features(previous, location_matrix)  # (N * T', C) or None
        if torch.is_grad_enabled():
            if loc is not None and k == 1:  # one fused pass: 2 (W m + c) + 2 U (F * a_prev)
                hidden = torch.addmm(projected.reshape(n * frames, dim), loc, self.location_proj.weight.t(), alpha=2.0)
                hidden = hidden.view(b, 1, frames, dim)
            elif loc is not None:
                hidden = projected.unsqueeze(1) + 2.0 * self.location_proj(loc).view(b, k, frames, dim)
            else:
                hidden = projected.unsqueeze(1)
            hidden = torch.sigmoid(torch.add(hidden, query_term, alpha=2.0))  # sigmoid(2h): (B, K, T', A)
        else:  # search: every (N, T', A) pass in place, in one reused tensor
            size = n * frames * dim
            use = scratch[:size] if scratch is not None and scratch.numel() >= size and scratch.dtype == projected.dtype else None
            hidden = torch.add(projected.unsqueeze(1), query_term, alpha=2.0,
                               out=use.view(b, k, frames, dim) if use is not None else None)
            if loc is not None:
                hidden.view(n * frames, dim).addmm_(loc, self.location_proj.weight.t(), alpha=2.0)
            hidden = hidden.sigmoid_()
        energies = torch.matmul(hidden, self.energy.weight.view(dim) * 2.0) + self.energy.bias  # (B, K, T')
        weights = torch.softmax(energies.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1)
        context = torch.bmm(weights, memory)  # (B, K, D)
        return context.view(n, -1), weights.view(n, frames)

    def _location_features(self, previous: torch.Tensor, location_matrix: torch.Tensor | None) -> torch.Tensor | None:
        """``F * a_prev`` as ``(N * T', C)`` for previous weights ``(N, T')``; None for content attention."""
        if not self.location:
            return None
        n, frames = previous.shape
        if location_matrix is None:
            return self.conv(previous.unsqueeze(1)).transpose(1, 2).reshape(n * frames, -1)
        return torch.mm(previous, location_matrix).view(n * frames, -1)


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

    def _advance(
        self, embedded: torch.Tensor | None, state: dict[str, torch.Tensor], gate_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step from embedded tokens ``(N, E)``; returns the output layer's input ``(N, H + D)``.

        Search gives ``gate_rows`` ``(N, 4H)`` (the tokens' rows of ``state["gate_table"]``) instead
        of ``embedded``, and its state carries the attention's ``scratch`` (see :meth:`_search_state`).
        """
        context, weights = self.attention(
            state["memory"], state["projected"], state["mask"], state["h"][-1], state["attention"],
            state.get("location_matrix"), state.get("scratch"),
        )
        hs, cs = [], []
        if gate_rows is not None:
            both = torch.cat([context, state["h"][0]], dim=-1)
            h, c = _lstm_cell(torch.addmm(gate_rows, both, state["gate_weight"].t()), state["c"][0])
            hs.append(h)
            cs.append(c)
            x = h
        else:
            x = torch.cat([embedded, context], dim=-1)
        for layer in range(len(hs), self.num_layers):
            h, c = self.cells[layer](x, (state["h"][layer], state["c"][layer]))
            hs.append(h)
            cs.append(c)
            x = self.dropout(h)
        new_state = dict(state, h=torch.stack(hs), c=torch.stack(cs), attention=weights)
        return torch.cat([x, context], dim=-1), new_state

    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if torch.is_grad_enabled():
            features, state = self._advance(self.embed(tokens), state)
        else:
            state = self._search_state(state)
            features, state = self._advance(None, state, state["gate_table"].index_select(0, tokens))
        return torch.log_softmax(self.output(features), dim=-1), state

    def _search_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What search adds to the state, once per search (at its first step):

        - ``gate_table`` ``(V, 4H)``: every token's embedding through the first LSTM layer's input
          weights, plus both biases; ``gate_weight`` ``(4H, D + H)``: its input weights on the context
          next to its recurrent weights. A step then costs one product ``[context, h] @ gate_weight^T``
          added to the tokens' rows, instead of the embedding, context and recurrent products of
          ``nn.LSTMCell``: the same sums in another order.
        - ``scratch``: the attention's pre-activation tensor, sized for the first step's ``N``; later
          steps (fewer rows once finished utterances are dropped) reuse it.
        """
        if "gate_table" in state:
            return state
        cell, embed_dim = self.cells[0], self.embed.embedding_dim
        table = torch.addmm(cell.bias_ih + cell.bias_hh, self.embed.weight, cell.weight_ih[:, :embed_dim].t())
        weight = torch.cat([cell.weight_ih[:, embed_dim:], cell.weight_hh], dim=1)
        projected, dtype = state["projected"], state["h"].dtype
        return dict(state, gate_table=table.to(dtype), gate_weight=weight.to(dtype),
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
        per_utterance = {key: state[key].index_select(0, utterances) for key in ("memory", "projected", "mask")}
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


@hookimpl
def asr_s2s_register_decoders() -> list[type]:
    return [AttentionDecoder]
