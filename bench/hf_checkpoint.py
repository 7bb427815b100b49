"""The softmax run as a plain Hugging Face token-classification checkpoint.

The softmax tagger is exactly ``AutoModelForTokenClassification`` (encoder, dropout, linear
layer) read at each word's first sub-word, so the peers — ``pipeline("token-classification")``
and optimum's ``ORTModelForTokenClassification`` — run the *same* fine-tuned weights.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_hf_checkpoint(run_dir: str | Path, out_dir: str | Path) -> Path:
    from transformers import AutoConfig, AutoModelForTokenClassification

    from ner_batch.models.tagger import load_model
    from ner_batch.training.runs import model_dir

    run_dir = Path(run_dir)
    model, tokenizer = load_model(model_dir(run_dir))
    if model.config.head != "softmax":
        raise ValueError(f"expected a softmax run, got a {model.config.head} run at {run_dir}")
    labels = model.config.labels
    encoder_config = dict(model.config.encoder_config)
    model_type = encoder_config.pop("model_type")
    for k in ("id2label", "label2id", "num_labels", "architectures"):
        encoder_config.pop(k, None)
    cfg = AutoConfig.for_model(model_type, **encoder_config, num_labels=len(labels),
                               id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    hf = AutoModelForTokenClassification.from_config(cfg)
    prefix = hf.base_model_prefix
    state = {f"{prefix}.{k[len('encoder.'):]}": v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    state["classifier.weight"] = model.head.classifier.weight
    state["classifier.bias"] = model.head.classifier.bias
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if "pooler" not in m]
    if missing or unexpected:
        raise ValueError(f"weights did not map onto {type(hf).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out = Path(out_dir)
    hf.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    # The same input gives the same emissions (first sub-words) as the tagger.
    batch = tokenizer(["APT28 used X-Agent ."], return_tensors="pt")
    with torch.no_grad():
        full = hf(**batch).logits
        ids = tokenizer(["APT28", "used", "X-Agent", "."], is_split_into_words=True)
        firsts = [i for i, w in enumerate(ids.word_ids()) if w is not None and (i == 0 or ids.word_ids()[i - 1] != w)]
        word_index = torch.tensor([firsts])
        ours = model(batch["input_ids"], batch["attention_mask"], word_index, torch.ones_like(word_index))
        torch.testing.assert_close(full[0, firsts], ours[0], atol=1e-4, rtol=1e-4)
    return out
