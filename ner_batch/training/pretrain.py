"""Continued masked-language-model pre-training of a backbone on in-domain text.

A backbone pre-trained on general text (all-MiniLM-L6-v2 was, besides, tuned for sentence
embeddings, not for filling in words) has never read CTI prose. Going on with its masked-LM
objective on text of the task's own domain before fine-tuning (task-adaptive pre-training,
Gururangan et al., 2020, "Don't Stop Pretraining") teaches the encoder that domain's contexts:
which words surround a malware name, a group name, a file. The text needs no labels: DNRTI's
training sentences (the default) or a corpus of the user's own reports.

Whole words are masked (every piece of a chosen word: Cui et al., 2019), 80% of them by the
mask token, 10% by a random piece, 10% kept, as BERT did. Only masked positions go through the
output layer (30k-wide), which is most of an MLM step's cost otherwise. The result is a plain
Hugging Face checkpoint with its tokenizer: ``ner-batch train --backbone OUT`` fine-tunes it
like any other backbone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..models.backbone import load_tokenizer, resolve_backbone
from .trainer import NO_DECAY, set_seed

#: Mask token / random piece / kept, per masked word (BERT's 80/10/10).
REPLACE_SHARES = (0.8, 0.1, 0.1)
IGNORE = -100  # label of an unmasked piece (cross-entropy's ignore_index)
META = "pretrain.json"


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    backbone: str = "minilm"
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 32
    mask_share: float = 0.15
    max_length: int = 128
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 13

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"expected --epochs of at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"expected --batch-size of at least 1, got {self.batch_size}")
        if not 0.0 < self.mask_share < 1.0:
            raise ValueError(f"expected --mask-share above 0 and below 1, e.g. 0.15, got {self.mask_share}")
        if self.max_length < 8:
            raise ValueError(f"expected --max-length of at least 8 word pieces, got {self.max_length}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"expected a positive --lr, e.g. 1e-4, got {self.lr}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"expected --warmup from 0 up to (not including) 1, got {self.warmup}")


@dataclasses.dataclass
class Chunk:
    """One training sequence: word pieces (no special tokens) and the word each belongs to."""
    ids: list[int]
    words: list[int]  # shape: (len(ids),) each piece's word, its index in the sentence, non-decreasing


def chunk_sentences(tokenizer, sentences: Iterable[Sequence[str]], max_length: int) -> list[Chunk]:
    """Word pieces of each sentence, cut at word boundaries into chunks of at most
    ``max_length - 2`` pieces (room for [CLS] and [SEP]); a single word longer than that is cut
    inside. Nothing is dropped: every piece of every sentence lands in one chunk."""
    room = max_length - 2
    chunks: list[Chunk] = []
    for words in sentences:
        words = [w for w in words if w.strip()]
        if not words:
            continue
        enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        owners = enc.word_ids()
        size = Counter(owners)  # pieces per word
        current = Chunk([], [])
        for piece, w in zip(enc["input_ids"], owners):
            begins_word = current.ids and current.words[-1] != w
            if begins_word and len(current.ids) + size[w] > room or len(current.ids) >= room:
                chunks.append(current)
                current = Chunk([], [])
            current.ids.append(piece)
            current.words.append(w)
        if current.ids:
            chunks.append(current)
    return chunks


def mask_words(chunk: Chunk, rng: random.Random, share: float, mask_id: int, vocab_size: int,
               avoid: frozenset[int] = frozenset()) -> tuple[list[int], list[int]]:
    """Whole-word masking of one chunk.

    ``round(share * words)`` words (at least one) are chosen; every piece of a chosen word is
    predicted, and the word is shown as the mask token (80%), as random pieces (10%, never one of
    ``avoid``: special tokens) or as itself (10%).

    Returns (inputs, labels), each of shape (len(chunk.ids),); labels are the original piece ids at
    predicted positions and :data:`IGNORE` elsewhere.
    """
    words = sorted(set(chunk.words))
    chosen = set(rng.sample(words, max(1, round(share * len(words)))))
    how = {w: rng.random() for w in chosen}
    inputs, labels = list(chunk.ids), [IGNORE] * len(chunk.ids)
    for i, (piece, w) in enumerate(zip(chunk.ids, chunk.words)):
        if w not in chosen:
            continue
        labels[i] = piece
        if how[w] < REPLACE_SHARES[0]:
            inputs[i] = mask_id
        elif how[w] < REPLACE_SHARES[0] + REPLACE_SHARES[1]:
            drawn = rng.randrange(vocab_size)
            while drawn in avoid:
                drawn = rng.randrange(vocab_size)
            inputs[i] = drawn
    return inputs, labels


def collate(rows: Sequence[tuple[list[int], list[int]]], cls_id: int, sep_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    """[CLS] pieces [SEP], right-padded: input_ids, attention_mask, labels, each (B, T)."""
    width = max(len(inputs) for inputs, _ in rows) + 2
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # shape: (B, T)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)  # shape: (B, T)
    mask = np.zeros((len(rows), width), dtype=np.int64)  # shape: (B, T)
    for b, (inputs, lab) in enumerate(rows):
        n = len(inputs)
        ids[b, : n + 2] = [cls_id, *inputs, sep_id]
        labels[b, 1 : n + 1] = lab
        mask[b, : n + 2] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask), "labels": torch.from_numpy(labels)}


def mlm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the predicted pieces. BERT-style models (``model.bert`` +
    ``model.cls``: BERT, MiniLM, SecBERT) send only the predicted positions through the output
    layer; any other masked LM runs its own forward pass with ``labels``."""
    labels = batch["labels"]
    if hasattr(model, "bert") and hasattr(model, "cls"):
        hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        picked = labels != IGNORE  # shape: (B, T)
        logits = model.cls(hidden[picked])  # shape: (P, V)
        return torch.nn.functional.cross_entropy(logits, labels[picked])
    return model(**batch).loss


def _special_ids(tokenizer) -> tuple[int, int, int, int]:
    missing = [name for name in ("mask_token_id", "cls_token_id", "sep_token_id", "pad_token_id")
               if getattr(tokenizer, name, None) is None]
    if missing:
        raise ValueError(f"expected a tokenizer with mask, CLS, SEP and pad tokens for masked-LM pre-training, "
                         f"found none for {', '.join(missing)}")
    return tokenizer.mask_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id


def corpus_sentences(inputs: Sequence[str], note: Callable[[str], None] = print) -> Iterable[list[str]]:
    """Words of each sentence of each document under ``inputs`` (files or directories, as
    ``ner-batch tag`` reads them: text, JSONL, CoNLL); a document that cannot be read is one line
    to ``note`` and is skipped."""
    from ..pipeline.inputs import discover, read_documents
    from ..segment import split_document

    for doc in read_documents(discover(inputs, note=note)):
        if doc.error:
            note(f"skipped {doc.id}: {doc.error}")
        elif doc.sentences is not None:
            yield from doc.sentences
        elif doc.tokens is not None:
            yield doc.tokens
        else:
            yield from split_document(doc.text or "")[0]


def pretrain(settings: PretrainSettings, sentences: Sequence[Sequence[str]], held_out: Sequence[Sequence[str]],
             out: str | Path, *, source: str, log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Go on with masked-LM training of ``settings.backbone`` on ``sentences`` (lists of words);
    report the masked-LM loss on ``held_out`` (fixed masks) after each epoch; save the model and
    its tokenizer to ``out`` as a Hugging Face checkpoint, with ``pretrain.json`` beside them.

    Raises FileExistsError when ``out`` already holds a model, ValueError when there is no text."""
    from tqdm import tqdm
    from transformers import AutoModelForMaskedLM, get_linear_schedule_with_warmup

    out = Path(out)
    if (out / "config.json").exists():
        raise FileExistsError(f"expected an empty --out, found a model in {out}; choose another --out or remove it")
    set_seed(settings.seed)
    tokenizer = load_tokenizer(settings.backbone)  # fast: chunking needs each piece's word
    mask_id, cls_id, sep_id, pad_id = _special_ids(tokenizer)
    avoid = frozenset(tokenizer.all_special_ids)
    chunks = chunk_sentences(tokenizer, sentences, settings.max_length)
    if not chunks:
        raise ValueError(f"expected text to pre-train on, found no words in {source}")
    held = chunk_sentences(tokenizer, held_out, settings.max_length)
    fixed = random.Random(settings.seed + 1)  # the held-out masks stay the same every epoch
    held_rows = [mask_words(c, fixed, settings.mask_share, mask_id, len(tokenizer), avoid) for c in held]

    model = AutoModelForMaskedLM.from_pretrained(resolve_backbone(settings.backbone))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if not any(k in n for k in NO_DECAY)], "weight_decay": settings.weight_decay},
        {"params": [p for n, p in named if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ], lr=settings.lr)
    steps = settings.epochs * math.ceil(len(chunks) / settings.batch_size)
    sched = get_linear_schedule_with_warmup(opt, int(settings.warmup * steps), steps)
    pieces = sum(len(c.ids) for c in chunks)
    log(f"masked-LM pre-training of {settings.backbone} on {len(chunks)} chunks ({pieces} word pieces) from {source}; "
        f"{settings.epochs} epochs of {math.ceil(len(chunks) / settings.batch_size)} steps, lr {settings.lr}, "
        f"{settings.mask_share:.0%} of words masked; held out: {len(held)} chunks")

    def held_loss() -> float | None:
        if not held_rows:
            return None
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(held_rows), 64):
                rows = held_rows[i : i + 64]
                batch = collate(rows, cls_id, sep_id, pad_id)
                n = int((batch["labels"] != IGNORE).sum())
                total += float(mlm_loss(model, batch)) * n
                count += n
        return total / count

    history: list[dict[str, Any]] = [{"epoch": 0, "held_out_loss": held_loss()}]
    if history[0]["held_out_loss"] is not None:
        log(f"epoch 0: held-out masked-LM loss {history[0]['held_out_loss']:.4f}")
    rng = random.Random(settings.seed)
    started = time.time()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        t0 = time.time()
        order = list(range(len(chunks)))
        rng.shuffle(order)
        order.sort(key=lambda i: len(chunks[i].ids) // 16)  # similar lengths together: less padding
        batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        rng.shuffle(batches)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{settings.epochs}", disable=not progress, leave=False)
        for picked in bar:
            batch = collate([mask_words(chunks[i], rng, settings.mask_share, mask_id, len(tokenizer), avoid)
                             for i in picked], cls_id, sep_id, pad_id)
            opt.zero_grad(set_to_none=True)
            loss = mlm_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(picked)
            count += len(picked)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        entry = {"epoch": epoch, "train_loss": total / count, "held_out_loss": held_loss(), "seconds": time.time() - t0}
        history.append(entry)
        log(f"epoch {epoch}: train masked-LM loss {entry['train_loss']:.4f}"
            + (f"  held-out {entry['held_out_loss']:.4f}" if entry["held_out_loss"] is not None else "")
            + f"  [{entry['seconds']:.0f}s]")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"settings": dataclasses.asdict(settings), "source": source, "chunks": len(chunks), "pieces": pieces,
            "held_out_chunks": len(held), "history": history, "wall_seconds": time.time() - started}
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    log(f"saved to {out}: fine-tune it with `ner-batch train --backbone {out}`")
    return meta
