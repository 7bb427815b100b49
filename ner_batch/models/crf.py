"""CRF head: an LSTM over word states (or none), a linear emission layer, and pytorch-crf's CRF.

The LSTM and the CRF both run over *words* (each word's first sub-word state), so that
training and the NumPy decoder of the runtime see the same sequence. The backward
direction of the BiLSTM reads each sequence reversed within its own length, so padding
never leaks into a real word's state: batched and one-by-one give the same emissions,
and the graph exports to ONNX without packed sequences.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchcrf import CRF


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x`` (B, W, H) within its length; padding stays in place."""
    w = x.size(1)
    pos = torch.arange(w, device=x.device).unsqueeze(0)  # shape: (1, W)
    last = (lengths - 1).unsqueeze(1)  # shape: (B, 1)
    index = torch.where(pos <= last, last - pos, pos)  # shape: (B, W)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(2)))


class CrfHead(nn.Module):
    """``lstm_hidden`` 0: no LSTM, the emission layer reads the encoder's word states (BERT-CRF)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float, lstm_hidden: int, bidirectional: bool):
        super().__init__()
        if lstm_hidden < 0:
            raise ValueError(f"expected an LSTM width of 0 (none) or above (e.g. 256), got {lstm_hidden}")
        self.bidirectional = bidirectional
        self.lstm_hidden = lstm_hidden
        self.forward_lstm = nn.LSTM(hidden, lstm_hidden, batch_first=True) if lstm_hidden else None
        self.backward_lstm = nn.LSTM(hidden, lstm_hidden, batch_first=True) if lstm_hidden and bidirectional else None
        self.dropout = nn.Dropout(dropout)
        self.emission = nn.Linear(lstm_hidden * (2 if bidirectional else 1) if lstm_hidden else hidden, num_labels)
        self.crf = CRF(num_labels, batch_first=True)

    def _run(self, lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
        # Explicit zero states sized from the input keep the batch axis dynamic in ONNX.
        h0 = x.new_zeros((1, x.size(0), self.lstm_hidden))
        return lstm(x, (h0, h0))[0]

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """``words`` (B, W, H) -> emissions (B, W, L)."""
        words = self.dropout(words)
        if self.forward_lstm is None:
            return self.emission(words)
        out = self._run(self.forward_lstm, words)
        if self.backward_lstm is not None:
            lengths = word_mask.sum(1).clamp(min=1)
            back = self._run(self.backward_lstm, reverse_padded(words, lengths))
            out = torch.cat([out, reverse_padded(back, lengths)], dim=-1)
        return self.emission(self.dropout(out))

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per sequence, divided by mean length for scale."""
        mask = word_mask.bool()
        nll = -self.crf(emissions, tags, mask=mask, reduction="sum")
        return nll / mask.sum().clamp(min=1)

    def decode(self, emissions: torch.Tensor, word_mask: torch.Tensor) -> list[list[int]]:
        return self.crf.decode(emissions, mask=word_mask.bool())

    @property
    def output_layer(self) -> nn.Linear:
        """The linear layer whose outputs are the emissions."""
        return self.emission

    def decoder_params(self) -> dict[str, np.ndarray]:
        """The CRF's scores, as the runtime's Viterbi takes them."""
        return {
            "transitions": self.crf.transitions.detach().cpu().numpy().astype(np.float32),
            "start": self.crf.start_transitions.detach().cpu().numpy().astype(np.float32),
            "end": self.crf.end_transitions.detach().cpu().numpy().astype(np.float32),
        }
