"""ner-batch command line: a thin layer over plain functions.

Heavy modules (torch, transformers) are imported inside the commands that need them,
so ``ner-batch tag`` starts and runs without torch installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ner-batch")
def main() -> None:
    """Tag named entities in cyber-threat-intelligence text, in bulk.

    \b
    Typical use:
      ner-batch train --head softmax --out runs/softmax      # fine-tune (needs the [train] extra)
      ner-batch evaluate --run runs/softmax --split test     # seqeval scores, whole and unseen
    """


DATA_HELP = "DNRTI directory with train.txt, valid.txt, test.txt [default: $NER_BATCH_DATA or ../shared/data/dnrti]."


@main.command()
@click.option("--head", type=click.Choice(["softmax", "crf"]), default="softmax", show_default=True,
              help="softmax: token classifier; crf: encoder + LSTM + CRF.")
@click.option("--backbone", default="minilm", show_default=True,
              help="'minilm' (offline, packaged all-MiniLM-L6-v2) or any Hugging Face model name or local checkpoint path.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Run directory, e.g. runs/softmax.")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None, help=DATA_HELP)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Encoder learning rate.")
@click.option("--head-lr", type=float, default=1e-3, show_default=True, help="Learning rate of the LSTM, emission layer and CRF.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--warmup", type=float, default=0.1, show_default=True, help="Share of steps spent warming up.")
@click.option("--dropout", type=float, default=0.1, show_default=True)
@click.option("--max-length", type=int, default=256, show_default=True,
              help="Word pieces per window; longer sentences are split at word boundaries, never truncated.")
@click.option("--lstm-hidden", type=int, default=256, show_default=True)
@click.option("--bilstm/--lstm", "bidirectional", default=True, show_default=True,
              help="Bidirectional LSTM, or unidirectional as in the course report (crf head only).")
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--limit-train", type=int, default=0, help="Train on the first N sentences only (quick runs).")
@click.option("--patience", type=int, default=0, help="Stop after N epochs without a better valid F1 (0: never).")
@click.option("--threads", type=int, default=0, help="Torch threads (0: torch's default).")
def train(out_dir, data, threads, bidirectional, **kw) -> None:
    """Fine-tune a tagger; keep the epoch with the best valid F1 in OUT/best.

    Writes OUT/metrics.json (per epoch, and the best epoch's valid and test scores,
    whole and unseen) and OUT/curves.png (losses and valid F1 per epoch).
    """
    import torch

    from .training.trainer import TrainSettings, train as run_train

    if threads:
        torch.set_num_threads(threads)
    settings = TrainSettings(lstm_bidirectional=bidirectional, **kw)
    metrics = run_train(settings, out_dir, data, log=lambda m: click.echo(m, err=True))
    click.echo(json.dumps({k: metrics[k] for k in ("best_epoch", "wall_seconds")}))


@main.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False), required=True, help="Training run directory (uses RUN/best).")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None, help=DATA_HELP)
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--strict", is_flag=True, help="Refuse to read a split that needs any repair.")
def evaluate(run_dir, data, split, as_json, strict) -> None:
    """seqeval precision / recall / F1 (micro and per type) of a run on a split,
    and on its "unseen" part (sentences whose tokens do not occur in train)."""
    from .data.dnrti import data_dir, unseen_mask
    from .evaluation import format_report, score

    directory = data_dir(data)
    sents, report = _load(directory, split, strict)
    train_sents, _ = _load(directory, "train", False) if split != "train" else (sents, report)
    tokens = [s.tokens for s in sents]
    pred, source = _predict_run(Path(run_dir), tokens), f"run {run_dir}"
    result = {"split": split, **score([s.labels for s in sents], pred, unseen_mask(sents, train_sents))}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"[{split}] {report.summary()}", err=True)
        click.echo(format_report(result, f"{source} on {split}"))


def _load(directory, split, strict):
    from .data.conll import ConllFormatError
    from .data.dnrti import load_split

    try:
        return load_split(directory, split, strict=strict)
    except ConllFormatError as exc:
        raise click.ClickException(str(exc)) from None


def _predict_run(run_dir: Path, tokens):
    from .encoding import WordEncoder
    from .models.tagger import load_model
    from .training.trainer import predict_tokens

    best = run_dir / "best" if (run_dir / "best").is_dir() else run_dir
    try:
        model, tokenizer = load_model(best)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    return predict_tokens(model, WordEncoder(tokenizer.backend_tokenizer, model.config.max_length), tokens)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
