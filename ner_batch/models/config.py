"""The hyper-parameters that define a tagger, saved as ``tagger.json`` beside its weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..encoding import WORD_POOLINGS
from ..labels import validate_labels

HEADS = ("softmax", "crf")
CONFIG_FILE = "tagger.json"
#: Beside no tagger.json, it makes a model directory an ensemble of saved taggers (models/ensemble.py).
ENSEMBLE_FILE = "ensemble.json"


@dataclasses.dataclass
class TaggerConfig:
    head: str
    labels: list[str]
    backbone: str = "minilm"
    max_length: int = 256
    dropout: float = 0.1
    lstm_hidden: int = 256
    lstm_bidirectional: bool = True
    shape_markers: bool = False  # a marker piece after Capitalized / ALLCAPS / mIxed / alphanumeric words (encoding.py)
    word_pooling: str = "first"  # a word's vector: its first piece's state, its last piece's, or their mean (markers included)
    suffix_pieces: int = 1  # the tokenizer's special pieces after a window's words ("last" / "mean" find the last word's end)
    encoder_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the HF config of the transformer encoder

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"expected head to be one of {HEADS}, got {self.head!r}")
        self.labels = validate_labels(self.labels, where="tagger labels")
        if self.word_pooling not in WORD_POOLINGS:
            raise ValueError(f"expected word pooling to be one of {', '.join(WORD_POOLINGS)}, got {self.word_pooling!r}")

    def windower(self, tokenizer):
        """The Windower this model was trained with (``tokenizer``: a HF fast tokenizer)."""
        from ..encoding import Windower

        windower = Windower(tokenizer.backend_tokenizer, self.max_length, shape_markers=self.shape_markers)
        if self.word_pooling != "first" and len(windower.suffix) != self.suffix_pieces:
            raise ValueError(f"expected {self.suffix_pieces} special pieces after a window's words (tagger.json "
                             f"suffix_pieces), the tokenizer adds {len(windower.suffix)}: the model's word ends would be "
                             f"misplaced; save the model with the tokenizer it trained with")
        return windower

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def save(self, directory: str | Path) -> None:
        Path(directory, CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "TaggerConfig":
        path = Path(directory, CONFIG_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"expected a trained model in {directory}, found no {CONFIG_FILE}")
        data = json.loads(path.read_text())
        if "encoder" in data and "encoder_config" not in data:  # tagger.json written before the field's rename
            data["encoder_config"] = data.pop("encoder")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
