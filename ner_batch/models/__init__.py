"""Models (PyTorch): a transformer encoder, word-level emissions, and a softmax or CRF head."""

from .config import TaggerConfig
from .tagger import WordTagger, build_model

__all__ = ["TaggerConfig", "WordTagger", "build_model"]
