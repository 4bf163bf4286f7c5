"""Additive attention for the speller: location-aware (Chorowski et al. 2015) or content-based (Bahdanau)."""

from __future__ import annotations

import torch
from torch import nn

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
