"""Fine-tune a WordTagger on CoNLL data: AdamW, warm-up + linear decay, length buckets,
best checkpoint on a valid score (--select: valid F1 by default), per-epoch metrics and curves.

A run directory holds::

    runs/<name>/
      best/            tagger.json, labels.json, model.safetensors, tokenizer files
      metrics.json     settings, one entry per epoch, the best epoch, and its test scores
      curves.png       train / valid loss and valid F1 per epoch
      train.log        the reader's repair report and the epoch lines
      checkpoint.pt    while the run trains: its state after the last finished epoch (checkpoint.py;
                       `train --resume` goes on from it), removed when the run ends
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.conll import Sentence, label_list
from ..data.dedup import unique_sentences
from ..data.dnrti import data_dir, load_split, unseen_mask
from ..encoding import Batch, Window, Windower
from ..evaluation import mention_texts, new_name_recall, score
from ..models import TaggerConfig, WordTagger, build_model
from ..models.backbone import load_tokenizer, reinit_top_layers, set_encoder_dropout
from ..decode import Decoder
from ..tagging import SentenceTagger
from ..names import donor_names
from .adversarial import EmbeddingAttack
from .anchor import ANCHOR_KEY, StartAnchor
from .augment import AugmentSettings, augment_all, mention_pool
from .averaging import WeightAverage
from .checkpoint import (CHECKPOINT, CheckpointError, Progress, branch, finished_training, load_checkpoint, load_trunk,
                         restore, save_checkpoint, trunk_origin)
from .distill import distill_loss, load_teachers, target_tensor, teacher_dirs, teacher_targets
from .runs import METRICS_FILE, SELECT_SCORES, RunError, model_dir, read_metrics


def _refuse_unless_finite_and_not_negative(flag: str, value: float, *, zero: str, example: str) -> None:
    """One line for a setting that must be 0 or above and finite (nan fails the comparison too)."""
    if not 0.0 <= value < float("inf"):
        raise ValueError(f"expected {flag} of 0 ({zero}) or above (e.g. {example}), got {value}")


@dataclasses.dataclass
class TrainSettings:
    head: str = "softmax"
    backbone: str = "minilm"
    epochs: int = 10
    lr: float = 1e-4  # encoder
    head_lr: float = 1e-3  # LSTM, emission layer and CRF
    layer_decay: float = 1.0  # encoder lr times this per layer below the top one (embeddings lowest); 1: one lr
    freeze_word_embeddings: bool = False  # word-piece embeddings keep their pre-trained values (shape markers' rows train)
    batch_size: int = 16
    warmup: float = 0.1  # share of steps
    weight_decay: float = 0.01  # AdamW's decoupled decay of every weight matrix (no biases, norms or frozen rows)
    start_decay: float = 0.0  # the encoder's weight matrices decay at this rate toward their start, not toward zero (anchor.py)
    reinit_top: int = 0  # the encoder's top N transformer layers drawn afresh from --seed before training (backbone.py)
    dropout: float = 0.1  # the head's (before the LSTM / classifier)
    encoder_dropout: float | None = None  # every dropout inside the encoder (None: the backbone's own, 0.1 for MiniLM)
    max_length: int = 256
    lstm_hidden: int = 256
    lstm_bidirectional: bool = True
    grad_clip: float = 1.0
    seed: int = 13  # initialisation of the head (and everything else unless data_seed is set)
    data_seed: int | None = None  # batch order, windows, rewrites and dropout (None: seed); runs that differ
    # only here start from the same weights, so they can be averaged into one model (soup.py)
    limit_train: int = 0  # use only the first N training sentences (0 = all); for quick runs
    dedup: bool = False  # each distinct training sentence once per epoch, labelled as most of its copies (data/dedup.py)
    patience: int = 0  # stop after N epochs without a better selection score (0 = never)
    select: str = "valid"  # the score that picks the best epoch: a key of SELECT_SCORES
    context_share: float = 0.0  # share of training windows cut across consecutive sentences (see context_examples)
    batch_tokens: int = 0  # cap on padded word pieces per batch (0 = batch_size windows, whatever their length)
    mention_replace: float = 0.0  # per mention and epoch: swap for another train mention of its type (augment.py)
    name_mask: float = 0.0  # per name mention and epoch: name-like words become synthetic names (augment.py)
    name_swap: float = 0.0  # per name mention and epoch: the name becomes a train name of another name type (augment.py)
    resplit: float = 0.0  # per sentence and epoch: cut into words as the raw-text splitter cuts them (augment.py)
    resplit_trim: bool = False  # re-split entities lose their edge punctuation and final possessive (augment.py)
    shape_markers: bool = False  # a marker piece after each cased / alphanumeric word (encoding.py)
    word_pooling: str = "first"  # a word's vector: its first piece's state, its last piece's, or their mean (models/tagger.py)
    average: float = 0.0  # decay of an exponential moving average of the weights, scored and saved instead (0 = off; averaging.py)
    adversarial: float = 0.0  # FGM step on the word-piece embeddings, each batch trained again perturbed (0 = off; adversarial.py)
    init: str = ""  # start from this trained model (a run or its best/, e.g. a soup) instead of the pretrained backbone
    branch_from: str = ""  # go on from this stopped run's checkpoint (--stop-after) with another data seed (checkpoint.py)
    teachers: tuple[str, ...] = ()  # softmax runs whose mean word-label distributions the student also learns (distill.py)
    distill_weight: float = 0.5  # share of the loss given to the teachers (the rest: gold labels)
    distill_temperature: float = 2.0  # softening of teacher and student distributions in the distillation term

    def __post_init__(self) -> None:
        self.augment  # noqa: B018 - refuses bad rewrite shares when the settings are made, before any work
        if self.average and not 0.0 < self.average < 1.0:
            raise ValueError(f"expected --average between 0 and 1 (e.g. 0.999), or 0 for none, got {self.average}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"expected --layer-decay above 0 and at most 1 (e.g. 0.8; 1: one encoder learning "
                             f"rate), got {self.layer_decay}")
        _refuse_unless_finite_and_not_negative("--weight-decay", self.weight_decay, zero="none", example="0.01")
        _refuse_unless_finite_and_not_negative("--adversarial", self.adversarial, zero="off", example="1.0")
        _refuse_unless_finite_and_not_negative("--start-decay", self.start_decay, zero="off", example="5")
        _refuse_unless_finite_and_not_negative("--lstm-hidden", self.lstm_hidden, zero="no LSTM: the crf's emissions read "
                                               "the encoder", example="256")
        _refuse_unless_finite_and_not_negative("--reinit-top", self.reinit_top, zero="keep every pre-trained layer", example="1")
        if self.branch_from and self.init:
            raise ValueError("expected --branch-from or --init, not both: the trunk's checkpoint holds the weights to start from")
        if self.reinit_top and self.init:
            raise ValueError("expected --reinit-top or --init, not both: --init's model has already trained its top layers")
        if self.adversarial and self.freeze_word_embeddings:
            raise ValueError("expected --adversarial or --freeze-word-embeddings, not both: the attack moves the "
                             "word-piece embeddings that --freeze-word-embeddings holds")
        if self.encoder_dropout is not None and not 0.0 <= self.encoder_dropout < 1.0:
            raise ValueError(f"expected --encoder-dropout from 0 up to (not including) 1, e.g. 0.2, got {self.encoder_dropout}")
        if self.select not in SELECT_SCORES:
            raise ValueError(f"expected --select to be one of {', '.join(SELECT_SCORES)}, got {self.select!r}")
        self.teachers = tuple(str(t) for t in self.teachers)
        if self.teachers:
            if self.head != "softmax":
                raise ValueError(f"expected --head softmax with --teacher (a CRF's emissions are no distribution "
                                 f"over labels to match), got --head {self.head}")
            if self.augment.active:
                raise ValueError("expected no --mention-replace, --name-mask, --name-swap or --resplit with --teacher: a rewritten word "
                                 "would be taught the original word's distribution")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"expected --distill-weight between 0 and 1, got {self.distill_weight}")
        if not self.distill_temperature > 0.0:
            raise ValueError(f"expected --distill-temperature above 0 (e.g. 2), got {self.distill_temperature}")

    @property
    def augment(self) -> AugmentSettings:
        return AugmentSettings(replace=self.mention_replace, mask=self.name_mask, swap=self.name_swap, resplit=self.resplit,
                               resplit_trim=self.resplit_trim)


@dataclasses.dataclass
class Example:
    window: Window
    tags: list[int]


#: Parameters whose name holds one of these take no weight decay (biases, layer norms).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_examples(windower: Windower, sentences: Sequence[Sentence], label2id: dict[str, int]) -> list[Example]:
    """One example per window; a sentence longer than the window gives several."""
    windows = windower.windows([s.tokens for s in sentences])
    return [Example(w, [label2id[t] for t in sentences[w.sentence].labels[w.word_start : w.word_end]]) for w in windows]


class WordStream:
    """The training sentences as one stream of words in file order (DNRTI keeps a report's
    sentences together), with each word's pieces, label id and the end of its sentence."""

    def __init__(self, windower: Windower, sentences: Sequence[Sentence], label2id: dict[str, int]):
        self.windower = windower
        self.pieces = [p for sent in windower.word_pieces([s.tokens for s in sentences]) for p in sent]
        self.tags = [label2id[t] for s in sentences for t in s.labels]
        self.sentence_end: list[int] = []
        for s in sentences:
            self.sentence_end.extend([len(self.sentence_end) + len(s.tokens)] * len(s.tokens))

    def examples(self, rng: random.Random, context_share: float, min_pieces: int = 32) -> list[Example]:
        """One epoch of windows covering every word once, as the runtime will see them.

        From the current word on, with probability ``context_share`` the next window holds
        ``min_pieces``..``budget`` word pieces (uniform) of consecutive sentences, cut at any
        word, so it starts and ends inside sentences as the runtime's overlapping windows of a
        long sentence or a whole pre-tokenized document do; otherwise it holds the rest of the
        current sentence (the whole sentence, or the part after a cut), as one-sentence
        inputs do. With ``context_share=0`` this is exactly one window per sentence.
        """
        windower, out, pos, n = self.windower, [], 0, len(self.pieces)
        while pos < n:
            if context_share > 0 and rng.random() < context_share:
                w = windower.window(len(out), pos, self.pieces, rng.randint(min(min_pieces, windower.budget), windower.budget))
            else:
                w = windower.window(len(out), pos, self.pieces, windower.budget, stop=self.sentence_end[pos])
            out.append(Example(w, self.tags[w.word_start : w.word_end]))
            pos = w.word_end
        return out


def bucketed_batches(examples: Sequence[Example], batch_size: int, rng: random.Random, pool: int = 50,
                     max_tokens: int = 0) -> list[list[Example]]:
    """Shuffled batches of similar length: shuffle, sort within pools of ``pool`` batches,
    cut (at ``batch_size`` windows, or earlier where ``max_tokens`` padded pieces would be
    exceeded), and shuffle the batches."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    step = batch_size * pool
    for i in range(0, len(order), step):
        chunk = sorted(order[i : i + step], key=lambda j: examples[j].window.n_tokens)
        cur: list[int] = []
        for j in chunk:  # ascending length: the window being added sets the batch's width
            width = examples[j].window.n_tokens
            if cur and (len(cur) >= batch_size or (max_tokens and width * (len(cur) + 1) > max_tokens)):
                batches.append(cur)
                cur = []
            cur.append(j)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return [[examples[j] for j in b] for b in batches]


def to_torch(batch: Batch) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.inputs().items()}


def tag_tensor(examples: Sequence[Example], width: int) -> torch.Tensor:
    out = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        out[i, : len(ex.tags)] = torch.tensor(ex.tags)
    return out


def sentence_tagger(model: WordTagger, windower: Windower) -> SentenceTagger:
    """The runtime's tagging path (windows, stitching, NumPy decoding) over PyTorch emissions
    (of a WordTagger or an EnsembleTagger: the same forward and decoder_params)."""
    model.eval()

    @torch.no_grad()
    def emit(batch: Batch) -> np.ndarray:
        return model(**to_torch(batch)).float().numpy()

    return SentenceTagger(windower, emit, Decoder(model.config.labels, model.decoder_params() or None))


def predict_tokens(model: WordTagger, windower: Windower, sentences: Sequence[Sequence[str]],
                   neighbours: int = 0) -> list[list[str]]:
    """Predicted labels for pre-split sentences with a PyTorch model."""
    return [t.labels for t in sentence_tagger(model, windower).tag(sentences, neighbours=neighbours)]


class InitError(ValueError):
    """--init names a model that is not what the other settings define."""


def load_init(settings: TrainSettings) -> tuple[WordTagger, Any]:
    """The trained model ``settings.init`` names (a run directory or its ``best/``), checked
    against the settings that define a model, so that a run never silently trains another."""
    from ..models.tagger import load_model

    best = model_dir(settings.init)
    model, tokenizer = load_model(best)
    if not isinstance(model, WordTagger):
        raise InitError(f"expected one trained model for --init, got an ensemble in {best}: give one of its runs")
    c = model.config
    for name, wanted, found in (("--head", settings.head, c.head), ("--shape-markers", settings.shape_markers, c.shape_markers),
                                ("--max-length", settings.max_length, c.max_length),
                                ("--word-pooling", settings.word_pooling, c.word_pooling)):
        if wanted != found:
            raise InitError(f"expected {name} {wanted!r} as the model in {best} was trained, found {found!r} there: "
                             f"pass {name} as it was")
    return model, tokenizer


def evaluate_model(model: WordTagger, windower: Windower, sentences: Sequence[Sentence], train: Sequence[Sentence] | None) -> dict[str, Any]:
    return score_predictions(sentences, predict_tokens(model, windower, [s.tokens for s in sentences]), train)


def score_predictions(sentences: Sequence[Sentence], pred: Sequence[Sequence[str]], train: Sequence[Sentence] | None, *,
                      unseen: Sequence[bool] | None = None, known: set[str] | None = None) -> dict[str, Any]:
    """Scores of predicted labels against ``sentences``: whole, unseen and seen parts and new
    names (the last three need ``train``). ``unseen`` (the sentences' ``unseen_mask``) and
    ``known`` (train's ``mention_texts``) spare computing them again from ``train`` for a
    caller that scores the same sentences many times."""
    words = [s.tokens for s in sentences]
    gold = [s.labels for s in sentences]
    if train is None:
        return score(gold, pred)
    result = score(gold, pred, unseen_mask(sentences, train) if unseen is None else unseen)
    if known is None:
        known = mention_texts([s.labels for s in train], [s.tokens for s in train])
    result["new_names"] = new_name_recall(gold, pred, words, known)
    return result


@torch.no_grad()
def mean_loss(model: WordTagger, windower: Windower, examples: Sequence[Example], batch_size: int = 64) -> float:
    model.eval()
    total, n = 0.0, 0
    ordered = sorted(examples, key=lambda e: e.window.n_tokens)
    for i in range(0, len(ordered), batch_size):
        chunk = ordered[i : i + batch_size]
        batch = windower.collate([e.window for e in chunk])
        loss = model.loss(to_torch(batch), tag_tensor(chunk, batch.word_mask.shape[1]))
        total += loss.item() * len(chunk)
        n += len(chunk)
    return total / max(n, 1)


class BackboneSettingError(ValueError):
    """A setting the encoder's architecture cannot honour: --layer-decay below 1 where no layer is
    found by name, --encoder-dropout where the config names no dropout rate."""


LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")  # BERT's encoder.layer.N, DistilBERT's transformer.layer.N


def encoder_depths(names: Sequence[str]) -> dict[str, int]:
    """How many layers below the encoder's top layer each encoder parameter sits (names
    without the ``encoder.`` prefix of WordTagger): 0 for the top transformer layer and for
    anything above it, L for the embeddings of an L-layer encoder.

    Raises BackboneSettingError when no name holds a layer index (an architecture whose layers are
    named otherwise), since a decay would then silently do nothing.
    """
    layers = {name: int(m.group(1)) for name in names if (m := LAYER_INDEX.search(name))}
    if not layers:
        raise BackboneSettingError("expected encoder parameters named like 'encoder.layer.N.' for --layer-decay, found none "
                              f"among {len(names)} (e.g. {', '.join(list(names)[:3])}); use --layer-decay 1")
    n_layers = max(layers.values()) + 1
    return {name: (n_layers if "embeddings" in name else n_layers - 1 - layers[name] if name in layers else 0)
            for name in names}


def encoder_names(model: WordTagger) -> dict[str, str]:
    """The trainable encoder parameters: WordTagger's name -> the name the encoder gives it."""
    return {name: name[len("encoder."):] for name, p in model.named_parameters()
            if p.requires_grad and name.startswith("encoder.")}


def freeze_word_embeddings(model: WordTagger, trainable_ids: Sequence[int] = ()) -> torch.nn.Parameter:
    """Keep the encoder's word-piece embeddings at their pre-trained values, except the rows
    ``trainable_ids`` (the shape markers: vocabulary the pre-trained model never used).

    A name seen in training and a new one then enter the encoder as the pre-training left
    them; what tells their types apart has to be learnt above the embeddings, from the words
    around them. The rows are held by zeroing their gradient (AdamW then never moves them:
    its moments stay zero); :func:`build_optimizer`, given ``freeze_word_embeddings``, exempts
    the matrix from weight decay. Without trainable rows the matrix simply stops requiring a
    gradient. Returns it.
    """
    weight = model.encoder.get_input_embeddings().weight  # shape: (vocab, hidden)
    if not trainable_ids:
        weight.requires_grad_(False)
        return weight
    keep = torch.zeros(weight.shape[0], 1, dtype=weight.dtype)  # shape: (vocab, 1)
    keep[list(trainable_ids)] = 1.0
    weight.register_hook(lambda grad: grad * keep)
    return weight


def build_optimizer(model: WordTagger, settings: TrainSettings, total_steps: int):
    """AdamW with one group per learning rate and weight decay: the head at ``head_lr``; the
    encoder at ``lr``, or with ``layer_decay`` < 1 at ``lr * layer_decay ** depth`` (depth as in
    :func:`encoder_depths`: the embeddings change least), and a linear schedule with warm-up.
    With ``start_decay`` the encoder's weight matrices form groups marked :data:`ANCHOR_KEY`
    that decay at that rate, toward their start once :class:`StartAnchor` pulls after each step."""
    from transformers import get_linear_schedule_with_warmup

    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    own_name = encoder_names(model)
    depths = encoder_depths(list(own_name.values())) if settings.layer_decay < 1.0 else {}
    # frozen word pieces: decay would move the rows their zeroed gradient holds
    held = model.encoder.get_input_embeddings().weight if settings.freeze_word_embeddings else None
    groups: dict[tuple[float, bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in params:
        if name in own_name:
            lr = settings.lr * settings.layer_decay ** depths.get(own_name[name], 0)
        else:
            lr = settings.head_lr
        decay = not any(nd in name for nd in NO_DECAY) and p is not held
        anchored = decay and name in own_name and settings.start_decay > 0.0
        groups.setdefault((lr, decay, anchored), []).append(p)
    param_groups = [
        {"params": ps, "lr": lr, ANCHOR_KEY: anchored,
         "weight_decay": settings.start_decay if anchored else settings.weight_decay if decay else 0.0}
        for (lr, decay, anchored), ps in groups.items()
    ]
    opt = torch.optim.AdamW(param_groups)
    sched = get_linear_schedule_with_warmup(opt, int(settings.warmup * total_steps), total_steps)
    return opt, sched


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h["valid_loss"] for h in history], "o-", label="valid loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [h["valid_f1"] * 100 for h in history], "o-", color="C2", label="valid F1")
    if all("valid_unseen_f1" in h for h in history):
        ax2.plot(epochs, [h["valid_unseen_f1"] * 100 for h in history], "o-", color="C3", label="valid F1, unseen sentences")
    if all("valid_new_name_recall" in h for h in history):
        ax2.plot(epochs, [h["valid_new_name_recall"] * 100 for h in history], "s--", color="C4",
                 label="valid exact-span recall, new names")
    if all("trained_weights" in h for h in history):  # --average: the weights the optimizer stepped, beside
        raw = [h["trained_weights"] for h in history]
        ax2.plot(epochs, [r["valid_f1"] * 100 for r in raw], ":", color="C2", label="valid F1, trained weights")
        ax2.plot(epochs, [r["valid_unseen_f1"] * 100 for r in raw], ":", color="C3", label="valid unseen F1, trained weights")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("seqeval F1 / recall (%)")
    ax2.legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(
    settings: TrainSettings,
    out_dir: str | Path,
    data: str | Path | None = None,
    *,
    model: WordTagger | None = None,
    tokenizer=None,
    splits: dict[str, list[Sentence]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resume: bool = False,
    stop_after: int = 0,
) -> dict[str, Any]:
    """Train, keep the best epoch on the --select valid score in ``out_dir/best``, and score it on test.

    ``model``/``tokenizer``/``splits`` override the backbone and the DNRTI files (tests
    pass a tiny random model and a few sentences). With ``resume``, a run stopped in
    ``out_dir`` goes on after its last finished epoch (checkpoint.py; none there: it starts
    afresh). With ``stop_after`` N (0: off) the process ends after epoch N as if killed there:
    ``out_dir/checkpoint.pt`` stays, for ``resume`` or a branch (``--branch-from``), and
    metrics.json holds the epochs so far, unscored. Returns the content of metrics.json.
    """
    from tqdm.auto import tqdm

    directory = data_dir(data) if splits is None else None  # both checked before anything is written
    teacher_dirs(settings.teachers)
    out = Path(out_dir)
    saved = resumable(out, settings) if resume else None
    at = saved["progress"] if saved is not None else None  # the same --stop-after command again: the trunk stays
    if at and stop_after and stop_after <= at["epoch"] and not finished_training(at, settings.epochs, settings.patience):
        log(f"already stopped after epoch {at['epoch']} of {settings.epochs}, at or past --stop-after "
            f"{stop_after}: nothing trained ({out / CHECKPOINT} kept; without --stop-after, --resume goes on)")
        return read_metrics(out)
    trunk = load_trunk(settings.branch_from, dataclasses.asdict(settings)) if settings.branch_from and saved is None else None
    if model is None and settings.init:
        model, tokenizer = load_init(settings)
    logfile = None
    lines: list[str] = []  # the log's lines (a checkpoint keeps them); in memory until out_dir is made
    echo_only = saved is not None  # a resumed run's setup lines are in its log already

    def say(msg: str) -> None:
        log(msg)
        if echo_only:
            return
        lines.append(msg)
        if logfile is not None:
            logfile.write(msg + "\n")
            logfile.flush()

    set_seed(settings.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if splits is None:
        splits = {}
        for name in ("train", "valid", "test"):
            sents, report = load_split(directory, name)
            splits[name] = sents
            say(f"[{name}] {report.summary()}")
    train_s, valid_s = splits["train"], splits["valid"]
    if settings.limit_train:
        train_s = train_s[: settings.limit_train]
    if settings.dedup:
        train_s, dedup_report = unique_sentences(train_s)
        say(f"[train] --dedup: {dedup_report.summary()}")
    labels = label_list([splits["train"], splits["valid"]])

    if model is None:
        tokenizer = load_tokenizer(settings.backbone)
        config = TaggerConfig(
            head=settings.head, labels=labels, backbone=settings.backbone, max_length=settings.max_length,
            dropout=settings.dropout, lstm_hidden=settings.lstm_hidden, lstm_bidirectional=settings.lstm_bidirectional,
            shape_markers=settings.shape_markers, word_pooling=settings.word_pooling,
        )
        config.suffix_pieces = len(config.windower(tokenizer).suffix)
        model = build_model(config)
    else:
        extra = sorted(set(labels) - set(model.config.labels))
        if extra:
            raise ValueError(f"expected the data's labels among the model's {len(model.config.labels)}, found {extra} too")
    if settings.layer_decay < 1.0:  # refused before anything is written
        encoder_depths(list(encoder_names(model).values()))
    try:  # also refused before anything is written
        if settings.encoder_dropout is not None:
            set_encoder_dropout(model.encoder, settings.encoder_dropout)  # WordTagger.save records the rates in tagger.json
        if settings.reinit_top:  # drawn from --seed: runs that differ in --data-seed alone still start alike
            reinit_top_layers(model.encoder, settings.reinit_top)
    except ValueError as exc:
        raise BackboneSettingError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    if saved is None and (out / CHECKPOINT).exists():  # another run's state must not resume this one
        say(f"{out / CHECKPOINT}, a stopped run's state, is removed: this run starts afresh (--resume continues a stopped run)")
        (out / CHECKPOINT).unlink()
    if saved is not None:
        lines = list(saved["progress"]["log_lines"])
    logfile = (out / "train.log").open("w")
    logfile.write("".join(line + "\n" for line in lines))
    label2id = {lab: i for i, lab in enumerate(model.config.labels)}
    windower = model.config.windower(tokenizer)
    if settings.freeze_word_embeddings:
        freeze_word_embeddings(model, windower.marker_ids)
    data_seed = settings.seed if settings.data_seed is None else settings.data_seed
    if data_seed != settings.seed:  # the same initial weights as --seed alone, another path from them
        torch.manual_seed(data_seed)

    augment = settings.augment
    pool = mention_pool(train_s) if augment.active else {}
    donors = donor_names(train_s) if augment.swap else {}
    stream = None if augment.active else WordStream(windower, train_s, label2id)
    valid_ex = make_examples(windower, valid_s, label2id)
    rng = random.Random(data_seed)
    targets = None
    if settings.teachers:
        t0 = time.time()
        with torch.random.fork_rng():  # building the teachers draws initial weights: keep this run's random stream
            targets = teacher_targets(load_teachers(settings.teachers, model.config.labels), train_s, settings.distill_temperature)
        assert stream is not None and len(targets) == len(stream.tags), "teacher targets do not cover the training words"
        say(f"distilling from {len(settings.teachers)} teachers (weight {settings.distill_weight}, temperature "
            f"{settings.distill_temperature}): targets for {len(targets)} words in {time.time() - t0:.0f}s")
    plan = []  # every epoch's batches, drawn up front so that the schedule knows the step count
    for _ in range(settings.epochs):
        if augment.active:  # mentions rewritten afresh each epoch
            stream = WordStream(windower, augment_all(train_s, pool, augment, rng, donors), label2id)
        epoch_ex = stream.examples(rng, settings.context_share)
        plan.append((len(epoch_ex), bucketed_batches(epoch_ex, settings.batch_size, rng, max_tokens=settings.batch_tokens)))
    origin = trunk_origin(settings.branch_from, trunk) if trunk is not None else saved["progress"].get("branch", {}) if saved else {}
    # a branch: the trunk's steps, then its own epochs after the trunk's
    total_steps = origin.get("steps", 0) + sum(len(b) for _, b in plan[origin.get("epoch", 0):])
    opt, sched = build_optimizer(model, settings, total_steps)
    average = WeightAverage(model, settings.average) if settings.average else None
    attack = EmbeddingAttack(model.encoder.get_input_embeddings().weight, settings.adversarial) if settings.adversarial else None
    anchor = StartAnchor(opt) if settings.start_decay else None
    if saved is not None:
        done = restore(saved, model, opt, sched, average, anchor)
    elif trunk is not None:
        done = branch(trunk, origin, data_seed, model, opt, sched, average, anchor)
    else:
        done = Progress()
    say(f"training {settings.head} on {len(train_s)} sentences ({plan[0][0]} windows in epoch 1, "
        f"context share {settings.context_share}, mention replace {settings.mention_replace}, "
        f"name mask {settings.name_mask}{f', name swap {settings.name_swap}' if settings.name_swap else ''}"
        f"{f', resplit {settings.resplit}' if settings.resplit else ''}{' trimmed' if settings.resplit_trim else ''}), {settings.epochs} epochs, {total_steps} steps, backbone {model.config.backbone}"
        + (f", encoder lr x{settings.layer_decay} per layer down" if settings.layer_decay < 1.0 else "")
        + (f", encoder dropout {settings.encoder_dropout}" if settings.encoder_dropout is not None else "")
        + (f", the encoder's top {settings.reinit_top} layers re-initialised" if settings.reinit_top else "")
        + (", no LSTM (emissions read the encoder)" if model.config.head == "crf" and not model.config.lstm_hidden else "")
        + (f", each word the {model.config.word_pooling} of its pieces' states" if model.config.word_pooling != "first" else "")
        + (", word-piece embeddings frozen" + (" (shape markers' rows train)" if windower.marker_ids else "")
           if settings.freeze_word_embeddings else "")
        + (f", scoring and saving the weights' moving average (decay {settings.average})" if average else "")
        + (f", each batch again with its word-piece embeddings perturbed adversarially (step {settings.adversarial})"
           if attack else "")
        + (f", encoder weight matrices decaying toward their start (rate {settings.start_decay})" if anchor else ""))
    if trunk is not None:
        say(f"branched after epoch {origin['epoch']} of {settings.epochs} from {settings.branch_from} (the trunk's data seed "
            f"{origin['data_seed']}): epochs {origin['epoch'] + 1}-{settings.epochs} drawn from data seed {data_seed}, "
            f"the best epoch chosen among them")
    if saved is not None:
        echo_only = False
        done.resumed.append(done.epoch)
        say(f"resumed after epoch {done.epoch} of {settings.epochs} from {out / CHECKPOINT} (best so far: epoch "
            f"{done.best_epoch}); the lines above are the stopped process's")

    history, select_key = done.history, SELECT_SCORES[settings.select]
    best_score, best_epoch, stale = done.best_score, done.best_epoch, done.stale
    started = time.time() - done.seconds  # training time over every process that trained this run
    stopped = bool(settings.patience and stale >= settings.patience)  # the checkpoint of the epoch that stopped it
    for epoch in range(done.epoch + 1, settings.epochs + 1 if not stopped else done.epoch + 1):
        model.train()
        t0 = time.time()
        total, seen = 0.0, 0
        bar = tqdm(plan[epoch - 1][1], desc=f"epoch {epoch}/{settings.epochs}", disable=not progress, leave=False)
        for chunk in bar:
            batch = windower.collate([e.window for e in chunk])
            inputs, tags = to_torch(batch), tag_tensor(chunk, batch.word_mask.shape[1])
            soft = None if targets is None else target_tensor(
                [(e.window.word_start, e.window.word_end) for e in chunk], targets, tags.shape[1])

            def batch_loss() -> torch.Tensor:
                if soft is None:
                    return model.loss(inputs, tags)
                emissions = model(**inputs)
                return distill_loss(emissions, model.head.loss(emissions, tags, inputs["word_mask"]), soft,
                                    inputs["word_mask"], settings.distill_weight, settings.distill_temperature)

            opt.zero_grad(set_to_none=True)
            loss = batch_loss()
            loss.backward()
            if attack is not None:
                with attack.perturbed() as moved:
                    if moved:  # the perturbed batch's gradient adds to the clean one's: one step for both
                        batch_loss().backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            if anchor is not None:
                anchor.pull()  # before the schedule moves the lr the step used
            sched.step()
            if average is not None:
                average.update(model)
            total += loss.item() * len(chunk)
            seen += len(chunk)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        bar.close()
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if average is not None:  # the trained weights too, so that one run scores both
            entry["trained_weights"] = _valid_entry(evaluate_model(model, windower, valid_s, splits["train"]))
        with average.applied(model) if average is not None else contextlib.nullcontext():
            valid = evaluate_model(model, windower, valid_s, splits["train"])
            entry.update(valid_loss=mean_loss(model, windower, valid_ex), **_valid_entry(valid), seconds=time.time() - t0)
            improved = entry[select_key] > best_score
            if improved:
                best_score, best_epoch, stale = entry[select_key], epoch, 0
                model.save(out / "best", tokenizer)
            else:
                stale += 1
        history.append(entry)
        raw = entry.get("trained_weights")
        say(f"epoch {epoch}: train loss {entry['train_loss']:.4f}  valid loss {entry['valid_loss']:.4f}  "
            f"valid F1 {entry['valid_f1']*100:.2f}  valid unseen F1 {entry['valid_unseen_f1']*100:.2f}  "
            f"new-name recall {entry['valid_new_name_recall']*100:.2f}"
            f"{'  (best)' if improved else ''}  [{entry['seconds']:.0f}s]"
            + (f"  | trained weights: valid F1 {raw['valid_f1']*100:.2f}  unseen {raw['valid_unseen_f1']*100:.2f}  "
               f"new-name recall {raw['valid_new_name_recall']*100:.2f}" if raw else ""))
        _write_metrics(out, settings, history, best_epoch, None, time.time() - started, done.resumed, done.branch)
        plot_curves(history, out / "curves.png", f"{settings.head} on {model.config.backbone}"
                    + (f", scores of the averaged weights (decay {settings.average})" if average else ""))
        stopped = bool(settings.patience and stale >= settings.patience)
        if stopped:
            say(f"no better {settings.select} score for {stale} epochs: stopping")
        done = Progress(epoch, history, best_score, best_epoch, stale, time.time() - started, lines, done.resumed, done.branch)
        save_checkpoint(out, dataclasses.asdict(settings), done, model, opt, sched, average, anchor)
        if stopped:
            break
        if epoch == stop_after and epoch < settings.epochs:
            say(f"stopped after epoch {epoch} of {settings.epochs} as --stop-after asks: {out / CHECKPOINT} keeps "
                f"the state (--resume goes on, --branch-from {out} starts a branch)")
            logfile.close()  # metrics.json says so until the run goes on (`ner-batch runs`: branches may start here)
            return write_metrics(out, {**read_metrics(out), "stopped_after": epoch})

    from ..models.tagger import load_model

    best, _ = load_model(out / "best")
    final: dict[str, Any] = {"valid": evaluate_model(best, windower, valid_s, splits["train"])}
    if splits.get("test"):
        final["test"] = evaluate_model(best, windower, splits["test"], splits["train"])
        say(f"best epoch {best_epoch}: valid F1 {final['valid']['f1']*100:.2f}  test F1 {final['test']['f1']*100:.2f}  "
            f"test unseen F1 {final['test']['unseen']['f1']*100:.2f}  "
            f"test new-name recall {final['test']['new_names']['new']['recall']*100:.2f}")
    metrics = _write_metrics(out, settings, history, best_epoch, final, time.time() - started, done.resumed, done.branch)
    logfile.close()
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is whole: nothing left to resume
    return metrics


def resumable(out: Path, settings: TrainSettings) -> dict[str, Any] | None:
    """The checkpoint that ``train --resume`` goes on from, or None (start afresh); a finished
    run or a checkpoint of other settings is refused (CheckpointError), before anything is written."""
    saved = load_checkpoint(out, dataclasses.asdict(settings))
    if saved is None and (out / METRICS_FILE).is_file():
        try:
            finished = read_metrics(out)
        except (RunError, OSError):  # not a readable run's metrics: nothing finished to protect
            finished = {}
        if "valid" in finished:
            raise CheckpointError(f"expected a stopped run in {out} to resume, found a finished one (best epoch "
                                  f"{finished.get('best_epoch')}, scored on valid): train into another --out, or "
                                  f"delete {out} to train it again")
    return saved


def _valid_entry(valid: dict[str, Any]) -> dict[str, float]:
    return {
        "valid_precision": valid["precision"],
        "valid_recall": valid["recall"],
        "valid_f1": valid["f1"],
        "valid_unseen_f1": valid["unseen"]["f1"],
        "valid_seen_f1": valid["seen"]["f1"],  # the valid sentences also in train: what memorising scores
        "valid_new_name_recall": valid["new_names"]["new"]["recall"],
    }


def _write_metrics(out: Path, settings: TrainSettings, history, best_epoch: int, final, seconds: float,
                   resumed: Sequence[int] = (), branch: dict[str, Any] | None = None) -> dict[str, Any]:
    metrics = {
        "settings": dataclasses.asdict(settings),
        "epochs": history,
        "best_epoch": best_epoch,
        "wall_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if resumed:  # the epochs after which a stopped run went on in another process
        metrics["resumed_after_epochs"] = list(resumed)
    if branch:  # the trunk this run went on from (its epochs are the history's first, marked "trunk")
        metrics["branched_from"] = dict(branch)
    if final:
        metrics.update(final)
    return write_metrics(out, metrics)


def write_metrics(out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``out/metrics.json`` whole or not at all (a reader never sees half a file)."""
    tmp = Path(out) / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(Path(out) / "metrics.json")
    return metrics


def save_and_score(model: WordTagger, tokenizer, windower: Windower, out: Path, valid: dict[str, Any],
                   splits: dict[str, list], what: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Save a model made from trained ones (a soup, a calibrated run) to ``out/best``, score
    test once, and log one line: ``{"valid": valid, "test": ...}`` (no test without test sentences)."""
    model.save(Path(out) / "best", tokenizer)
    final: dict[str, Any] = {"valid": valid}
    if splits.get("test"):
        final["test"] = evaluate_model(model, windower, splits["test"], splits["train"])
    log(f"{what}: valid F1 {valid['f1']*100:.2f}  valid unseen F1 {valid['unseen']['f1']*100:.2f}"
        + (f"  test F1 {final['test']['f1']*100:.2f}  test unseen F1 {final['test']['unseen']['f1']*100:.2f}"
           if "test" in final else ""))
    return final
