"""WordTagger: transformer encoder -> word vectors (first sub-word states by default) -> head -> word emissions.

The module's ``forward`` is exactly the part exported to ONNX: it takes the four arrays
of :class:`ner_batch.encoding.Batch` and returns word-level emissions ``(B, W, L)``.
Decoding (argmax-free constrained Viterbi, or the CRF's Viterbi) stays outside.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .backbone import load_encoder
from .config import TaggerConfig
from .crf import CrfHead
from .softmax import SoftmaxHead

WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"


def gather_words(states: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """The states at one position per word: ``states`` (B, T, H), ``word_index`` (B, W) -> (B, W, H)."""
    return torch.gather(states, 1, word_index.unsqueeze(-1).expand(-1, -1, states.size(-1)))


def word_ends(word_index: torch.Tensor, word_mask: torch.Tensor, attention_mask: torch.Tensor,
              suffix_pieces: int) -> torch.Tensor:
    """One past each word's last piece, (B, W): the next word's first piece, and for a window's
    last word the start of the special pieces after it (a window holds whole words, encoding.py).
    Padding words get 0, so they cover no piece.

    ``word_index`` (B, W) first pieces, ``word_mask`` (B, W), ``attention_mask`` (B, T).
    """
    following = torch.cat([word_index[:, 1:], torch.zeros_like(word_index[:, :1])], dim=1)  # shape: (B, W)
    n_words = word_mask.sum(1, keepdim=True)  # shape: (B, 1)
    position = torch.cumsum(torch.ones_like(word_index), dim=1) - 1  # shape: (B, W), 0..W-1
    window_end = attention_mask.sum(1, keepdim=True) - suffix_pieces  # shape: (B, 1)
    return torch.where(position == n_words - 1, window_end, following) * word_mask  # shape: (B, W)


def pool_words(states: torch.Tensor, word_index: torch.Tensor, word_mask: torch.Tensor, attention_mask: torch.Tensor,
               how: str = "first", suffix_pieces: int = 1) -> torch.Tensor:
    """Word vectors (B, W, H) from piece states (B, T, H): the first piece's state, the last
    piece's (with shape markers: the marker's, for a marked word) or the mean over the word's
    pieces. Padding words get the first position's state ("first", "last") or zeros ("mean");
    the heads mask them.
    """
    if how == "first":
        return gather_words(states, word_index)
    ends = word_ends(word_index, word_mask, attention_mask, suffix_pieces)  # shape: (B, W)
    if how == "last":
        return gather_words(states, (ends - 1).clamp(min=0))
    if how != "mean":
        raise ValueError(f"expected word pooling first, last or mean, got {how!r}")
    positions = torch.cumsum(torch.ones_like(attention_mask), dim=1) - 1  # shape: (B, T), 0..T-1
    inside = (positions.unsqueeze(1) >= word_index.unsqueeze(2)) & (positions.unsqueeze(1) < ends.unsqueeze(2))  # (B, W, T)
    weights = inside.to(states.dtype)  # shape: (B, W, T)
    counts = weights.sum(-1, keepdim=True).clamp(min=1.0)  # shape: (B, W, 1)
    return torch.matmul(weights, states) / counts  # shape: (B, W, H)


class WordTagger(nn.Module):
    def __init__(self, config: TaggerConfig, encoder: nn.Module):
        super().__init__()
        self.config = config
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        if config.head == "softmax":
            self.head: nn.Module = SoftmaxHead(hidden, config.num_labels, config.dropout, config.labels)
        else:
            self.head = CrfHead(hidden, config.num_labels, config.dropout, config.lstm_hidden, config.lstm_bidirectional)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Word-level emissions (B, W, L)."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        words = pool_words(states, word_index, word_mask, attention_mask, self.config.word_pooling, self.config.suffix_pieces)
        return self.head(words, word_mask)

    def loss(self, batch: dict[str, torch.Tensor], tags: torch.Tensor) -> torch.Tensor:
        return self.head.loss(self(**batch), tags, batch["word_mask"])

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> list[list[int]]:
        """Label ids per real word of each sequence."""
        return self.head.decode(self(**batch), batch["word_mask"])

    def decoder_params(self) -> dict:
        """The scores the runtime's decoder takes beside the emissions (the CRF's; {} for softmax)."""
        return self.head.decoder_params()

    @torch.no_grad()
    def shift_label(self, label: str, delta: float) -> None:
        """Add ``delta`` to every emission of ``label``, folded into the bias of the head's
        output layer: the graph, its size and its speed stay as they are."""
        if label not in self.config.labels:
            raise ValueError(f"expected a label among {len(self.config.labels)} in labels.json, got {label!r}")
        self.head.output_layer.bias[self.config.labels.index(label)] += float(delta)

    def save(self, directory: str | Path, tokenizer=None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.encoder_config = self.encoder.config.to_dict()
        self.config.save(directory)
        (directory / LABELS_FILE).write_text(json.dumps(self.config.labels, indent=1) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))


def build_model(config: TaggerConfig, *, pretrained: bool = True) -> WordTagger:
    """A tagger with the backbone's pretrained encoder, or (``pretrained=False``) one
    built from ``config.encoder_config`` with random weights, e.g. for tests or before loading."""
    if pretrained:
        encoder = load_encoder(config.backbone)
    else:
        from transformers import AutoConfig, AutoModel

        enc_cfg = dict(config.encoder_config)
        model_type = enc_cfg.pop("model_type", None)
        if model_type is None:
            raise ValueError("expected the encoder config to name its model_type, found none")
        encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **enc_cfg))
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
    config.encoder_config = encoder.config.to_dict()
    return WordTagger(config, encoder)


def load_model(directory: str | Path) -> tuple[WordTagger, object]:
    """A saved tagger and its tokenizer, from a training run's ``best/`` directory (an
    :class:`~ner_batch.models.ensemble.EnsembleTagger` where the directory holds an ensemble)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from .config import ENSEMBLE_FILE
    from .ensemble import load_ensemble_dir

    directory = Path(directory)
    if (directory / ENSEMBLE_FILE).is_file():
        return load_ensemble_dir(directory)
    config = TaggerConfig.load(directory)
    model = build_model(config, pretrained=False)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"expected weights at {weights}, found none")
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not match {config.head} model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(directory), use_fast=True)
