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
from .encoding import WORD_POOLINGS
from .probe import SWAP_MODES, format_probe, probe_scores, swap_names
from .training.calibrate import DEFAULT_GRID as CALIBRATION_GRID, TYPE_GRID as CALIBRATION_TYPE_GRID
from .training.runs import SELECT_SCORES, SOUP_RECIPES


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ner-batch")
def main() -> None:
    """Tag named entities in cyber-threat-intelligence text, in bulk.

    \b
    Typical use:
      ner-batch tag corpus/ --bundle export/crf --out tags.jsonl   # the main job (no torch needed)
      ner-batch train --head softmax --out runs/softmax      # fine-tune (needs the [train] extra)
      ner-batch evaluate --run runs/softmax --split test     # seqeval scores, whole and unseen
    """


def _variant_help() -> str:
    from .cpu import describe

    return ("Bundle model. fp32; opt: fp32 with fused transformer ops; int8: static int8 (fixed activation scales); "
            "int8-dynamic: int8 with activation scales taken per batch, so its labels can change with --shard-docs, "
            "--token-budget, --max-batch and resume; fp16: for CUDA. fp32, opt and int8 give the same entities however "
            "the corpus is cut. int8 speed and accuracy depend on the CPU; this one: " + describe()
            + " (`make bench` measures it).")


VARIANTS = ["fp32", "opt", "int8", "int8-dynamic", "fp16"]
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
@click.option("--layer-decay", type=float, default=1.0, show_default=True,
              help="Layer-wise learning-rate decay: each encoder layer below the top one trains at this times the "
                   "lr of the layer above (embeddings lowest), e.g. 0.8; 1: one encoder lr.")
@click.option("--freeze-word-embeddings", is_flag=True, default=False,
              help="Keep the encoder's word-piece embeddings as pre-trained (the shape markers' rows still train), so "
                   "names seen in training and new ones enter the encoder alike and the layers above learn the types "
                   "from context.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--warmup", type=float, default=0.1, show_default=True, help="Share of steps spent warming up.")
@click.option("--weight-decay", type=float, default=0.01, show_default=True,
              help="AdamW weight decay of the weight matrices, encoder and head alike (biases, norms and frozen "
                   "word pieces get none; with --start-decay the encoder's matrices decay toward their start instead); 0: none.")
@click.option("--start-decay", type=float, default=0.0, show_default=True,
              help="Decay the encoder's weight matrices toward their values at the start of training (the "
                   "pre-trained backbone, or --init's model) at this rate instead of toward zero (L2-SP, e.g. 5; "
                   "each step closes lr times this of the distance); the head keeps --weight-decay. 0: off.")
@click.option("--reinit-top", type=int, default=0, show_default=True,
              help="Re-initialise the encoder's top N transformer layers before training (drawn from --seed as the "
                   "backbone draws a new model's weights), for a backbone pre-trained for another task; 0: keep them all.")
@click.option("--dropout", type=float, default=0.1, show_default=True,
              help="Dropout of the head (on the encoder's word vectors, and after the LSTM for crf).")
@click.option("--encoder-dropout", type=float, default=None,
              help="Dropout inside the encoder during training: its embeddings, hidden states and attention "
                   "[default: the backbone's own, 0.1 for MiniLM]. Tagging is unaffected.")
@click.option("--max-length", type=int, default=256, show_default=True,
              help="Word pieces per window; longer sentences are split at word boundaries, never truncated.")
@click.option("--lstm-hidden", type=int, default=256, show_default=True,
              help="Width of the crf head's LSTM (each direction); 0: no LSTM, the emission layer reads the "
                   "encoder's word states (BERT-CRF). The softmax head has none.")
@click.option("--bilstm/--lstm", "bidirectional", default=True, show_default=True,
              help="Bidirectional LSTM, or unidirectional as in the course report (crf head only).")
@click.option("--word-pooling", type=click.Choice(WORD_POOLINGS), default="first", show_default=True,
              help="A word's vector for the head: its first word piece's state (the DistilBERT recipe), its last "
                   "piece's (with --shape-markers, a marked word's marker), or the mean of its pieces. Computed "
                   "inside the exported graph, so bundles and the runtime need nothing else.")
@click.option("--seed", type=int, default=13, show_default=True, help="Seed of the initial weights (and of the rest, "
              "unless --data-seed is given).")
@click.option("--data-seed", type=int, default=None,
              help="Seed of batch order, windows, rewrites and dropout [default: --seed]. Runs that differ only in it "
                   "start from the same weights and can be averaged (ner-batch soup).")
@click.option("--limit-train", type=int, default=0, help="Train on the first N sentences only (quick runs).")
@click.option("--dedup", is_flag=True, default=False,
              help="Train on each distinct training sentence once per epoch (DNRTI's train repeats 1366 of its 5251 "
                   "sentences, one 13 times), labelled as most of its copies are; the log says how many were dropped.")
@click.option("--patience", type=int, default=0, help="Stop after N epochs without a better --select score (0: never).")
@click.option("--select", type=click.Choice(list(SELECT_SCORES)), default="valid",
              show_default=True,
              help="The valid score that picks the best epoch: F1 on all of valid, F1 on the valid sentences not in "
                   "train, or exact-span recall on mentions whose text is no train mention.")
@click.option("--context-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of training windows cut across consecutive sentences at any word (as long documents are "
                   "tagged); the rest are single sentences.")
@click.option("--batch-tokens", type=click.IntRange(0), default=0, show_default=True,
              help="Cap on padded word pieces per training batch (0: --batch-size windows whatever their length).")
@click.option("--mention-replace", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Per mention and epoch, the chance it is swapped for another training mention of its type.")
@click.option("--name-mask", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Per HackOrg/Tool/SamFile/SecTeam/Org mention and epoch, the chance its name-like words become "
                   "synthetic names (so only the context tells the type).")
@click.option("--name-swap", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Per HackOrg/Tool/SamFile/SecTeam/Org mention and epoch, the chance its name becomes a training "
                   "name of another of these types, its tag kept (the name misleads, the context tells the type; "
                   "what evaluate --swap-names cross-type probes).")
@click.option("--resplit", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Per sentence and epoch, the chance its words are cut as `tag` cuts raw text (DNRTI's '(C2)', "
                   "'Intel®', \"'s\" become several words, tags carried over), so the model also learns the words of raw reports.")
@click.option("--resplit-trim", is_flag=True, default=False,
              help="With --resplit: a re-split entity's pieces at its edges with no letter or digit, and a final "
                   "possessive 's, are tagged O (DNRTI keeps '(EternalBlue)' and \"APT28's\" whole inside the entity; "
                   "the model then learns 'EternalBlue' and 'APT28', as an analyst marks them).")
@click.option("--shape-markers/--no-shape-markers", default=False, show_default=True,
              help="Give an uncased backbone each word's shape: a marker piece after Capitalized, ALL-CAPS, mIxed-case "
                   "and letters+digits words (more word pieces, so slower tagging; see README).")
@click.option("--average", type=float, default=0.0, show_default=True,
              help="Score and save an exponential moving average of the weights with this decay per step "
                   "(e.g. 0.999; 0: the trained weights). The log and metrics.json show the trained weights beside.")
@click.option("--adversarial", type=float, default=0.0, show_default=True,
              help="Train each batch a second time with the word-piece embeddings moved this far along the loss "
                   "gradient (FGM, e.g. 1.0; 0: off), so labels must hold when words look a little different; "
                   "about twice the training time, tagging unchanged.")
@click.option("--init", type=click.Path(file_okay=False), default="",
              help="Start from this trained model (a run directory or its best/, e.g. a soup) instead of the "
                   "pretrained backbone; --head, --shape-markers and --max-length must be as it was trained.")
@click.option("--branch-from", type=click.Path(), default="", metavar="TRUNK",
              help="Go on from TRUNK's state (a run stopped with --stop-after N: its weights, optimizer and schedule) "
                   "and train epochs N+1.. from this run's own --data-seed; every other setting must be the trunk's. "
                   "Branches of one trunk share their first N epochs, so a soup of them keeps more of each.")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(file_okay=False),
              help="A trained softmax run to distill from (repeat for several: the student learns their mean "
                   "word-label distributions beside the gold labels); softmax head only.")
@click.option("--distill-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of the loss given to the teachers' distributions with --teacher (the rest: gold labels).")
@click.option("--distill-temperature", type=float, default=2.0, show_default=True,
              help="Temperature softening teacher and student distributions in the distillation term.")
@click.option("--threads", type=int, default=0, help="Torch threads (0: torch's default).")
@click.option("--resume", is_flag=True, default=False,
              help="Go on with a run stopped in OUT (killed, out of time) after its last finished epoch, with the "
                   "command it started with; it ends as if never stopped. No checkpoint in OUT: start afresh.")
@click.option("--stop-after", type=click.IntRange(0), default=0, show_default=True,
              help="End the process after epoch N, its state kept in OUT/checkpoint.pt (--resume without "
                   "--stop-after goes on; --branch-from OUT starts branches from it; the same command again trains "
                   "nothing); 0: train every epoch.")
def train(out_dir, data, threads, bidirectional, resume, stop_after, **kw) -> None:
    """Fine-tune a tagger; keep the epoch with the best valid score (--select) in OUT/best.

    Writes OUT/metrics.json (per epoch, and the best epoch's valid and test scores,
    whole and unseen) and OUT/curves.png (losses and valid F1 per epoch). While it trains,
    OUT/checkpoint.pt holds the state after the last finished epoch, for --resume.
    """
    import torch

    from .training.checkpoint import CheckpointError
    from .training.distill import TeacherError
    from .training.runs import RunError
    from .training.trainer import InitError, BackboneSettingError, TrainSettings, train as run_train

    if threads:
        torch.set_num_threads(threads)
    try:
        settings = TrainSettings(lstm_bidirectional=bidirectional, **kw)
    except ValueError as exc:  # rewrite shares that do not add up, an average decay out of range
        raise click.UsageError(str(exc)) from None
    try:
        metrics = run_train(settings, out_dir, data, log=lambda m: click.echo(m, err=True), resume=resume,
                            stop_after=stop_after)
    except (InitError, BackboneSettingError, TeacherError, RunError, CheckpointError, FileNotFoundError) as exc:  # no
        raise click.ClickException(str(exc)) from None  # DNRTI at --data, an --init or --teacher that cannot be used,
        # --layer-decay or --encoder-dropout the encoder cannot honour, a checkpoint that cannot resume this run
    click.echo(json.dumps({k: metrics[k] for k in ("best_epoch", "wall_seconds")}))


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Where the pre-trained backbone goes (a Hugging Face checkpoint with its tokenizer), e.g. "
                   "runs/minilm-tapt; then `ner-batch train --backbone runs/minilm-tapt`.")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None, help=DATA_HELP)
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "valid", "test"]), default=("train",),
              show_default=True, help="Without INPUTS: the DNRTI splits whose words are the text (labels unused); "
                                      "valid's masked-LM loss is reported each epoch unless valid is among them.")
@click.option("--backbone", default="minilm", show_default=True,
              help="'minilm' (offline, packaged all-MiniLM-L6-v2) or any Hugging Face masked LM name or local checkpoint path.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--mask-share", type=float, default=0.15, show_default=True, help="Share of each chunk's words masked.")
@click.option("--max-length", type=int, default=128, show_default=True,
              help="Word pieces per chunk; longer sentences are cut at word boundaries, nothing is dropped.")
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--threads", type=int, default=0, help="Torch threads (0: torch's default).")
def pretrain(inputs, out_dir, data, splits, threads, **kw) -> None:
    """Go on pre-training a backbone (masked LM, whole words) on CTI text before fine-tuning.

    \b
    INPUTS: files or directories of your own reports, read as `ner-batch tag` reads them
    (text, JSONL, CoNLL; every 50th sentence held out for the loss report). Without
    INPUTS: DNRTI's training sentences (--split), no labels used.
    \b
      ner-batch pretrain --out runs/minilm-tapt            # DNRTI train text
      ner-batch pretrain reports/ --out runs/minilm-cti     # your corpus
      ner-batch train --head crf --backbone runs/minilm-tapt --out runs/crf-tapt
    """
    import torch

    from .training.pretrain import PretrainSettings, corpus_sentences, pretrain as run_pretrain
    from .pipeline.inputs import InputError

    if threads:
        torch.set_num_threads(threads)
    try:
        settings = PretrainSettings(**kw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    note = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        if inputs:
            text = list(corpus_sentences(inputs, note))
            held, sentences = text[::50], [s for i, s in enumerate(text) if i % 50]
            if not sentences:  # one sentence alone is trained on, not held out
                held, sentences = [], text
            source = f"{len(inputs)} input(s)"
        else:
            from .data.dnrti import data_dir, load_split

            directory = data_dir(data)
            read = {}
            for split in dict.fromkeys([*splits, "valid"]):
                read[split], report = load_split(directory, split)
                note(f"[{split}] {report.summary()}")
            sentences = [s.tokens for split in splits for s in read[split]]
            held = [] if "valid" in splits else [s.tokens for s in read["valid"]]
            source = f"DNRTI {'+'.join(splits)} at {directory}"
        meta = run_pretrain(settings, sentences, held, out_dir, source=source, log=note)
    except (InputError, FileExistsError, FileNotFoundError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError:
        raise click.ClickException(str(exc)) from None  # a backbone without a fast tokenizer, minilm's package missing
    click.echo(json.dumps({"epochs": settings.epochs, "wall_seconds": round(meta["wall_seconds"], 1),
                           "held_out_loss": meta["history"][-1]["held_out_loss"]}))


def _model_job(threads: int, job):
    """Run a job on trained models (soup, calibrate) with ``threads`` torch threads (0: torch's
    default); a run that is not one, or missing data, is one line."""
    import torch

    from .training.runs import RunError

    if threads:
        torch.set_num_threads(threads)
    try:
        return job()
    except (RunError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Run directory for the averaged model, e.g. runs/crf (export it like any run).")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None, help=DATA_HELP)
@click.option("--recipe", type=click.Choice(list(SOUP_RECIPES)), default="greedy",
              show_default=True,
              help="greedy: runs best first, each kept only if the soup's valid score does not drop; uniform: all; "
                   "greedy-calibrated: as greedy, each trial scored after its best 'O' shift (as `calibrate` "
                   "chooses it), and the soup saved with that shift.")
@click.option("--select", type=click.Choice(list(SELECT_SCORES)), default="valid", show_default=True,
              help="The valid score that orders the runs and decides (greedy, greedy-calibrated) which go in.")
@click.option("--threads", type=int, default=0, help="Torch threads (0: torch's default).")
def soup(run_dirs, out_dir, data, recipe, select, threads) -> None:
    """Average finished training runs (RUN...) into one model: same size and speed as one run.

    The runs must share their initial weights: the same model settings and --seed, other
    --data-seed (e.g. `ner-batch train ... --seed 13 --data-seed 14`). Writes OUT/best and
    OUT/metrics.json (each run alone, which went in, the soup's valid and test scores, and its
    spread: how far the runs lie from their mean weights, per encoder layer and head; a part far
    more spread than the others is where the mean keeps less of what the runs learnt).
    Chosen on valid only; test is scored once, on the result.
    """
    from .training.soup import make_soup

    result = _model_job(threads, lambda: make_soup(run_dirs, out_dir, data, recipe=recipe, select=select,
                                                   log=lambda m: click.echo(m, err=True)))
    click.echo(json.dumps({"runs": result["settings"]["soup"]["runs"], "wall_seconds": result["wall_seconds"]}))


@main.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Run directory for the calibrated model, e.g. runs/crf-cal (export it like any run).")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None, help=DATA_HELP)
@click.option("--grid", default=",".join(f"{g:g}" for g in CALIBRATION_GRID), show_default=True,
              help="Comma-separated shifts of the 'O' emission to try (> 0: fewer, surer entities; < 0: more).")
@click.option("--select", type=click.Choice(list(SELECT_SCORES)), default="valid", show_default=True,
              help="The valid score that picks the shift.")
@click.option("--per-type", is_flag=True,
              help="Then, with the 'O' shift fixed, one shift per entity type (its B- and I- emissions) from "
                   "--type-grid, each chosen on valid with the others fixed, up to two passes over the types: "
                   "moves the balance between types (e.g. Tool against HackOrg) as well.")
@click.option("--type-grid", default=",".join(f"{g:g}" for g in CALIBRATION_TYPE_GRID), show_default=True,
              help="Comma-separated shifts tried for each type with --per-type.")
@click.option("--cross-fit", "folds", type=int, default=None,
              help="Also score the procedure K-fold cross-fitted on valid (chosen on K-1 parts of the "
                   "sentences, applied to the rest), beside O-only calibration's: what the chosen shifts are "
                   "worth on sentences they were not chosen on. 0: not. [default: 2 with --per-type, else 0]")
@click.option("--threads", type=int, default=0, help="Torch threads (0: torch's default).")
def calibrate(run_dirs, out_dir, data, grid, select, per_type, type_grid, folds, threads) -> None:
    """Shift a trained model's 'O' emission by the amount that scores best on valid, folded
    into the output layer's bias: the balance between missed and spurious entities, set on
    valid; the graph, size and speed stay as they are.

    RUN is a finished run or soup. Writes OUT/best and OUT/metrics.json (every shift's valid
    scores, the chosen one's valid and test scores). Test is scored once, on the result.
    Several RUNs: their output ensemble is calibrated, and OUT/best holds it (every member
    shifted alike); `export --run OUT` makes it one bundle (one encoder per run).
    """
    from .training.calibrate import calibrate_run, check_folds, parse_grid

    try:
        shifts = parse_grid(grid)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grid") from None
    try:
        type_shifts = parse_grid(type_grid, option="--type-grid")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--type-grid") from None
    if folds is not None:
        try:
            check_folds(folds)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cross-fit") from None
    result = _model_job(threads, lambda: calibrate_run(list(run_dirs), out_dir, data, grid=shifts, select=select,
                                                       per_type=per_type, type_grid=type_shifts, folds=folds,
                                                       log=lambda m: click.echo(m, err=True)))
    chosen = result["settings"]["calibrate"]
    click.echo(json.dumps({"shift": chosen["shift"], **({"types": chosen["types"]} if per_type else {}),
                           "wall_seconds": result["wall_seconds"]}))


@main.command()
@click.option("--run", "run_dirs", type=click.Path(file_okay=False), multiple=True,
              help="Training run directory (uses RUN/best). Repeat it to score the output ensemble of the runs "
                   "(their emissions averaged, in PyTorch; `export --run A --run B ...` makes it a bundle).")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False), default=None,
              help="Exported model bundle (export/NAME); needs no torch.")
@click.option("--variant", type=click.Choice(VARIANTS), default="fp32", show_default=True, help=_variant_help())
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="ONNX Runtime device for --bundle: CUDA when available (auto), or forced.")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None, help=DATA_HELP)
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--strict", is_flag=True, help="Refuse to read a split that needs any repair.")
@click.option("--join", type=click.IntRange(1), default=1, show_default=True,
              help="Tag N consecutive sentences joined into one sequence, with no boundary the tagger can see (as a "
                   "whole pre-tokenized document is tagged), then score each sentence as usual.")
@click.option("--neighbours", type=click.IntRange(0), default=0, show_default=True,
              help="Read each sentence with up to N word pieces of the sentences before it and N of those after it "
                   "(whole words; DNRTI's splits keep their reports' order), as a sentence sits in its report; only its "
                   "own words are labelled and scored (--against is read the same way). 0: each sentence alone.")
@click.option("--confusions", is_flag=True,
              help="Print the whole span-level type confusion table (which gold type got which predicted type); "
                   "without it, only the largest confusions. --json always has the table.")
@click.option("--against", "against", type=click.Path(file_okay=False), default=None,
              help="A second tagger to compare with on the same sentences: a run directory (or saved ensemble) or a "
                   "bundle (a directory with manifest.json; same --variant and --device). Adds the difference in F1 "
                   "and its bootstrap interval, whole split and unseen part.")
@click.option("--bootstrap", "rounds", type=click.IntRange(0, 10_000), default=1000, show_default=True,
              help="Resamples of the split's sentences (with replacement, unseen and seen apart, seed 0) for the "
                   "95% intervals of F1 and of the difference to --against; 0: no intervals.")
@click.option("--swap-names", "swap_mode", type=click.Choice(SWAP_MODES), default=None,
              help="Context probe: also tag the split with every HackOrg/Tool/SamFile/SecTeam/Org mention renamed "
                   "(synthetic: made-up names; cross-type: a name train gives another of these types), the words "
                   "around it unchanged, and report how many renamed mentions are still found and given their type: "
                   "what the model reads from the context rather than the name. Scores above stay the original's.")
@click.option("--swap-seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed of the names drawn by --swap-names.")
def evaluate(run_dirs, bundle_dir, variant, device, data, split, as_json, strict, join, neighbours, confusions, against,
             rounds, swap_mode, swap_seed) -> None:
    """seqeval precision / recall / F1 (micro and per type) of a run or a bundle on a split,
    and on its "unseen" part (sentences whose tokens do not occur in train), with bootstrap
    intervals; exact-span recall on new names (mentions whose text is no mention in train) and
    what they were tagged as; the largest confusions between types. With --against, the
    paired difference to a second tagger: is a gain larger than the split's noise? With
    --swap-names, the context probe (names replaced, context kept)."""
    from .data.dnrti import data_dir, unseen_mask
    from .evaluation import (bootstrap, confusion_headline, format_bootstrap, format_confusion, format_new_names,
                             format_report, mention_texts, new_name_recall, score, span_counts)

    try:
        directory = data_dir(data)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    sents, report = _load(directory, split, strict)
    train_sents, _ = _load(directory, "train", False) if split != "train" else (sents, report)
    tokens = [s.tokens for s in sents]
    if bool(run_dirs) == (bundle_dir is not None):
        raise click.UsageError("give --run DIR (one or more) or --bundle DIR, not both and not neither")
    if neighbours and (join > 1 or swap_mode is not None):
        raise click.UsageError(f"--neighbours reads each sentence with the ones around it; give it without "
                               f"{'--join' if join > 1 else '--swap-names'}")
    if against is not None and not Path(against).is_dir():
        raise click.ClickException(f"expected a run directory or a bundle at --against {against}, found nothing")
    renamed: list[list[str]] = []
    if swap_mode is not None:
        import random

        from .names import donor_names

        try:
            swapped, swaps = swap_names(sents, swap_mode, donor_names(train_sents), random.Random(swap_seed))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        renamed = [s.tokens for s in swapped]

    def joins(part: list[list[str]]) -> list[list[str]]:
        return [[w for s in part[k : k + join] for w in s] for k in range(0, len(part), join)]

    joined = joins(tokens)
    # one pass tags the split and, for the probe, its renamed copy (same joins, never across the two)
    pred, known, source = _predict_split([Path(r) for r in run_dirs], bundle_dir, variant, device,
                                         joined + joins(renamed), tokens + renamed, neighbours)
    pred, pred_renamed = pred[: len(tokens)], pred[len(tokens) :]
    if join > 1:
        source += f", {join} sentences per sequence"
    if neighbours:
        source += f", {neighbours} word pieces of the neighbouring sentences on each side"
    gold = [s.labels for s in sents]
    mask = unseen_mask(sents, train_sents)
    result = {"split": split, "join": join, "neighbours": neighbours, **score(gold, pred, mask)}
    from .runtime.bundle import MANIFEST

    other = None
    against_bundle = against is not None and (Path(against) / MANIFEST).is_file()
    if against is not None:
        runs, bundle = ([], against) if against_bundle else ([Path(against)], None)
        other, _, other_source = _predict_split(runs, bundle, variant, device, joined, tokens, neighbours)
        result["against"] = {"source": other_source, **score(gold, other, mask)}
    if rounds:
        result["bootstrap"] = bootstrap(span_counts(gold, pred), mask if any(mask) else None,
                                        None if other is None else span_counts(gold, other), rounds=rounds)
    if split != "train":
        known_names = mention_texts([s.labels for s in train_sents], [s.tokens for s in train_sents])
        result["new_names"] = new_name_recall(gold, pred, tokens, known_names)
    if swap_mode is not None:
        result["context_probe"] = {"mode": swap_mode, "seed": swap_seed, **probe_scores(swaps, pred, pred_renamed)}
    unknown = sorted({lab for s in sents for lab in s.labels} - known)
    if unknown:  # counted as misses: say so rather than score quietly low
        result["unknown_gold_labels"] = unknown
        click.echo(f"warning: {split}.txt has labels the model cannot predict (scored as misses): {', '.join(unknown)}", err=True)
    if bundle_dir is not None or against_bundle:
        from .cpu import cpu_info

        result["cpu"] = cpu_info()
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"[{split}] {report.summary()}", err=True)
        click.echo(format_report(result, f"{source} on {split}"))
        if "against" in result:
            a = result["against"]
            click.echo(f"against {a['source']}: micro F1 {a['f1']*100:.2f}, unseen {a['unseen']['f1']*100:.2f}")
        if "bootstrap" in result:
            click.echo(format_bootstrap(result["bootstrap"], against="against" if against else ""))
        if "new_names" in result:
            click.echo(format_new_names(result["new_names"]))
        if "context_probe" in result:
            click.echo(format_probe(result["context_probe"], swap_mode, swap_seed))
        if confusions:
            click.echo("")
            click.echo(format_confusion(result["confusion"]))
        else:
            click.echo(confusion_headline(result["confusion"]))


def _load(directory, split, strict):
    from .data.conll import ConllFormatError
    from .data.dnrti import load_split

    path = Path(directory) / f"{split}.txt"
    if not path.is_file():
        raise click.ClickException(f"expected {path} ({split} split), found {'a directory' if path.exists() else 'nothing'} there")
    try:
        sents, report = load_split(directory, split, strict=strict)
    except (ConllFormatError, UnicodeDecodeError, OSError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    if not sents:
        raise click.ClickException(f"expected sentences in {path}, found none (empty file)")
    return sents, report


def _predict_split(run_dirs: list[Path], bundle_dir, variant: str, device: str, joined, tokens, neighbours: int = 0):
    """Predicted labels per sentence of ``tokens`` (tagged as the sequences ``joined``, each read
    with ``neighbours`` word pieces of those around it), the labels the tagger knows, and a name
    for it: from runs (PyTorch) or a bundle (ONNX)."""
    if run_dirs:
        pred, known = _predict_runs(run_dirs, joined, neighbours)
        source = f"run {run_dirs[0]}" if len(run_dirs) == 1 else f"ensemble of {len(run_dirs)} runs ({', '.join(map(str, run_dirs))})"
    else:
        from .cpu import describe

        tagger = _tagger(bundle_dir, variant, device)
        pred, known = [w.labels for w in tagger.tag_words(joined, neighbours)], set(tagger.labels)
        source = f"bundle {bundle_dir} ({variant}, {tagger.model.device})"
        click.echo(f"measured on this machine's CPU: {describe()}", err=True)
    flat = iter([label for labels in pred for label in labels])
    return [[next(flat) for _ in s] for s in tokens], known, source  # back to one list per sentence


def _predict_runs(run_dirs: list[Path], tokens, neighbours: int = 0):
    """Labels of every sequence of ``tokens`` from one run (or saved ensemble), or the output
    ensemble of several; and the labels the model knows."""
    from .training.ensemble import load_runs
    from .training.trainer import predict_tokens

    try:
        model, tokenizer = load_runs(run_dirs)
    except (FileNotFoundError, ValueError) as exc:  # RunError is a ValueError
        raise click.ClickException(str(exc)) from None
    return predict_tokens(model, model.config.windower(tokenizer), tokens, neighbours), set(model.config.labels)


def _tagger(bundle_dir, variant: str, device: str, threads: int = 0):
    from .runtime.bundle import BundleError
    from .runtime.session import DeviceError
    from .runtime.tagger import Tagger

    try:
        return Tagger(bundle_dir, variant, device, threads, say=lambda m: click.echo(m, err=True))
    except (BundleError, DeviceError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False), default="export/crf", show_default=True,
              help="Model bundle written by `make export`.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Output file; it appears complete or not at all. Work in progress lives in OUT.parts/.")
@click.option("--input-format", type=click.Choice(["text", "jsonl", "conll"]), default=None,
              help="Force the input format [default: from the extension; .txt/other=text, .jsonl, .conll; .gz of any; - is jsonl].")
@click.option("--output-format", type=click.Choice(["jsonl", "conll", "stix"]), default="jsonl", show_default=True,
              help="jsonl: one record per document with character offsets; conll: word, label, score per line; "
                   "stix: one STIX 2.1 bundle per document and line (see `ner-batch convert --help` for the mapping).")
@click.option("--variant", type=click.Choice(VARIANTS), default="opt", show_default=True, help=_variant_help())
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when ONNX Runtime can start it, else CPU (said once); cuda: fail if it cannot.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Worker processes, each with its own ONNX Runtime session; CPU threads are split between them.")
@click.option("--threads", type=click.IntRange(0), default=0, help="ONNX Runtime threads per worker [default: cores / workers].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: worker processes on this machine; ray: the same shards on Ray actors (needs ner-batch[ray]); "
                   "--workers is the actor count, --threads the CPUs per actor, --device cuda one GPU per actor.")
@click.option("--ray-address", default=None,
              help="Ray cluster to join with --engine ray [default: $RAY_ADDRESS, else a local Ray started for the run].")
@click.option("--resume", is_flag=True, help="Continue an interrupted run with the same inputs and settings (OUT.parts/).")
@click.option("--shard-docs", type=click.IntRange(1), default=512, show_default=True,
              help="Documents per shard, at most (a shard also stops at ~128K characters); the unit of resume and of work per worker.")
@click.option("--token-budget", type=click.IntRange(1), default=8192, show_default=True, help="Padded word pieces per batch, at most.")
@click.option("--max-batch", type=click.IntRange(1), default=32, show_default=True, help="Windows per batch, at most.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None, help="Also write the final summary as JSON here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary table.")
def tag(inputs, bundle_dir, out, input_format, output_format, variant, device, workers, threads, engine, ray_address, resume,
        shard_docs, token_budget, max_batch, summary_json, quiet) -> None:
    """Tag INPUT... (directories, files, or - for standard input) into one output file.

    \b
    Every document gets exactly one output line, in input order: its id, its entities
    (start/end character offsets into the original text, label, text, score) and counts;
    a document that cannot be read gets an error record with the reason. Long sentences
    are split into windows at word boundaries, never truncated. Kill it at any moment and
    run the same command with --resume: the output ends up identical.
    """
    from .output.stix import StixUnavailable
    from .pipeline.inputs import InputError
    from .pipeline.ray_engine import RayEngineError
    from .pipeline.run import OutputError, WorkerError, check_writable_file, tag_corpus
    from .pipeline.shards import ResumeError
    from .runtime.bundle import BundleError
    from .runtime.session import DeviceError

    try:
        if summary_json:
            check_writable_file(summary_json, "--summary-json")
        summary = tag_corpus(
            inputs, bundle_dir, out, variant=variant, device=device, workers=workers, threads=threads,
            input_format=input_format, output_format=output_format, resume=resume, shard_docs=shard_docs,
            token_budget=token_budget, max_batch=max_batch, progress=not quiet, say=lambda m: click.echo(m, err=True),
            engine=engine, ray_address=ray_address,
        )
    except (InputError, OutputError, ResumeError, BundleError, DeviceError, WorkerError, StixUnavailable, RayEngineError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished shards are kept in {out}.parts/; run the same command with --resume", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(summary.table(), err=True)
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary.as_dict(), indent=2) + "\n")


def _records(tags_file, skipped: list[int]):
    """The JSON records of a tags.jsonl(.gz) file; line numbers of lines that are not records go to ``skipped``."""
    from .pipeline.records import RecordsError, read_records

    try:
        for _, rec in read_records(tags_file, skipped):
            yield rec
    except RecordsError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("tags_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True, help="Entities to print (0: all).")
@click.option("--min-score", type=float, default=0.0, show_default=True, help="Only entities scored at least this.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None,
              help="Write one self-contained HTML page instead (no network): entities highlighted by type, a legend "
                   "that filters by type, scores on hover, counts.")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True, help="With --html: which page of documents.")
@click.option("--per-page", type=click.IntRange(1), default=200, show_default=True, help="With --html: documents per page.")
def show(tags_file, limit, min_score, html_out, page, per_page) -> None:
    """Print the entities of a tags.jsonl file (or tags.jsonl.gz) as a readable table, or
    write them as an HTML page (--html).

    Ids and entity texts are printed with control characters escaped, so that nothing in a
    document can move the cursor or clear the terminal. Lines that are not JSON records are
    skipped and counted.
    """
    from .pipeline.records import _one_line

    skipped: list[int] = []
    try:
        if html_out:
            from .output.html import render

            page_html, info = render(_records(tags_file, skipped), title=f"ner-batch: {Path(tags_file).name}", page=page,
                                     per_page=per_page)
            _write_atomic(Path(html_out), page_html)
            click.echo(f"wrote {html_out}: {info['shown']} of {info['documents']} documents (page {info['page']} of "
                       f"{info['pages']}), {sum(info['entities'].values())} entities", err=True)
            return
        shown = 0
        for rec in _records(tags_file, skipped):
            rid = _one_line(str(rec.get("id", "?")))
            if rec.get("error"):
                click.echo(f"{rid}: ERROR {_one_line(str(rec['error']))}")
                continue
            entities = rec.get("entities") if isinstance(rec.get("entities"), list) else []
            for ent in entities:
                if not isinstance(ent, dict):
                    continue
                score = ent.get("score")
                if min_score and not (isinstance(score, (int, float)) and score >= min_score):
                    continue
                if limit and shown >= limit:
                    return
                doc = rid.rsplit("/", 1)[-1]
                score_s = f"{score:.3f}" if isinstance(score, (int, float)) else "  -  "
                click.echo(f"{doc[:24]:<24} {ent.get('start', '?'):>7}-{ent.get('end', '?'):<7} "
                           f"{_one_line(str(ent.get('label', '?'))):<9} {score_s}  {_one_line(str(ent.get('text', '')))}")
                shown += 1
    finally:
        if skipped:
            click.echo(f"skipped {len(skipped)} line(s) that are not JSON records (first: line {skipped[0]})", err=True)


def _write_atomic(path: Path, text: str) -> None:
    from .pipeline.run import OutputError, check_writable_file
    from .pipeline.shards import write_atomic

    try:
        check_writable_file(path, "output")
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    write_atomic(path, text)


@main.command()
@click.argument("tags_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "to", type=click.Choice(["stix"]), default="stix", show_default=True, help="Output format.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Output file, one bundle per line.")
def convert(tags_file, to, out) -> None:
    """Turn existing ner-batch records (tags.jsonl, or .gz) into STIX 2.1 bundles, without re-tagging.

    \b
    One bundle per record and line, in order: a report for the document and one object per
    distinct entity. DNRTI types map to: HackOrg -> intrusion-set; Tool -> tool; SamFile ->
    file; SecTeam, Org -> identity (organization); Idus -> identity (class, with sectors);
    Area -> location (country or region, when the name is known); Exp -> vulnerability (with
    a CVE reference); OffAct, Way -> attack-pattern; Time, Purp, Features -> no object. Every
    mention, with its offsets and score, stays in the report's x_ner_batch_entities. Ids are
    deterministic, so platforms merge the same entity across documents and runs.
    """
    import time

    from .output.stix import StixBuilder, StixUnavailable
    from .pipeline.records import one_line

    try:
        builder = StixBuilder(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    except StixUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    skipped: list[int] = []
    lines = (one_line(builder.bundle(rec)) + "\n" for rec in _records(tags_file, skipped))
    out = Path(out)
    if out.exists() and Path(tags_file).resolve() == out.resolve():
        raise click.ClickException(f"--out {out} is the input file; choose another output path")
    from .pipeline.run import OutputError, check_writable_file

    try:
        check_writable_file(out, "output")
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
            n += 1
    tmp.replace(out)
    click.echo(f"wrote {n} STIX bundle(s) to {out}" + (f"; skipped {len(skipped)} line(s) that are not records "
                                                       f"(first: line {skipped[0]})" if skipped else ""), err=True)


@main.command()
@click.argument("gold_file", metavar="GOLD", type=click.Path(exists=True, dir_okay=False))
@click.argument("tags_file", metavar="TAGS", type=click.Path(exists=True, dir_okay=False))
@click.option("--map", "label_map", multiple=True, metavar="GOLD=MODEL",
              help="Read a gold label as a model label, e.g. --map group=HackOrg --map software=Tool (repeat it).")
@click.option("--types", "types", default=None, metavar="T1,T2",
              help="The types GOLD marks wherever they occur, comma-separated [default: the types found in GOLD]; "
                   "predicted spans of other types are neither right nor wrong.")
@click.option("--confusions", is_flag=True, help="Also print the span-level type confusion table.")
@click.option("--bootstrap", "rounds", type=click.IntRange(0, 10_000), default=1000, show_default=True,
              help="Resamples of the documents for the 95% interval of micro F1; 0: none.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def score(gold_file, tags_file, label_map, types, confusions, rounds, as_json) -> None:
    """Score TAGS (records of `ner-batch tag`, .gz too) against GOLD character spans of your own text.

    \b
    GOLD is JSONL, one document per line, the input format of `tag` with the entities added:
      {"id": "r1", "text": "...", "entities": [{"start": 0, "end": 5, "label": "HackOrg"}]}
    so `ner-batch tag gold.jsonl --out tags.jsonl` then `ner-batch score gold.jsonl tags.jsonl`
    measures the model on your reports. Offsets are Unicode code points, end exclusive.
    Reported per gold type: exact-span precision, recall and F1, and what the spans not found
    exactly got instead (another type, other boundaries, untagged). Only the types the gold
    has are scored: a gold that marks only groups and software does not count the model's
    other types as wrong. Documents are joined by id; a gold document with no record or an
    error record is left out and listed; bad gold lines and entities are skipped and counted.
    """
    import dataclasses

    from .evaluation import format_bootstrap, format_confusion
    from .gold_spans import GoldError, format_spans_report, read_gold, read_tags, score_spans

    mapping = {}
    for item in label_map:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise click.ClickException(f"expected --map GOLD=MODEL (e.g. --map software=Tool), got {item!r}")
        mapping[source] = target
    try:
        gold = read_gold(gold_file, mapping)
        tags, tags_skipped = read_tags(tags_file, ids={d.id for d in gold.docs})
    except GoldError as exc:
        raise click.ClickException(str(exc)) from None
    if not any(d.id in tags for d in gold.docs):
        raise click.ClickException(
            f"expected records in {tags_file} for the documents of {gold_file}, found none with the same id "
            f"(gold ids start {', '.join(repr(d.id) for d in gold.docs[:2])}); tag the gold file itself, with ids")
    scored_types = None
    if types is not None:
        scored_types = [x.strip() for x in types.split(",") if x.strip()]
        missing = sorted(set(gold.types) - set(scored_types))
        if not scored_types or missing:
            raise click.ClickException(f"expected --types to name every type in {gold_file} ({', '.join(gold.types)}), "
                                       f"got {types!r}" + (f"; missing {', '.join(missing)}" if missing else ""))
    result = score_spans(gold, tags, types=scored_types, rounds=rounds)
    result["tags"] = str(tags_file)
    skipped = gold.skipped + tags_skipped
    if as_json:
        result["skipped"] = [dataclasses.asdict(r) for r in skipped]
        click.echo(json.dumps(result))
        return
    click.echo(format_spans_report(result, skipped))
    if "bootstrap" in result:
        click.echo(format_bootstrap(result["bootstrap"], unit="documents"))
    if confusions:
        click.echo("")
        click.echo(format_confusion(result["confusion"]))


@main.command("export")
@click.option("--run", "run_dirs", type=click.Path(exists=True, file_okay=False), required=True, multiple=True,
              help="Training run (runs/NAME). Repeat it to export the output ensemble of the runs as one graph "
                   "(their emissions averaged; one encoder per run, so N runs cost N times the tagging time).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Bundle directory (export/NAME).")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None, help=DATA_HELP)
@click.option("--no-eval", is_flag=True, help="Skip scoring each variant on DNRTI test.")
@click.option("--tolerance", type=float, default=1e-3, show_default=True,
              help="Largest accepted |ONNX Runtime - PyTorch| emission difference for fp32 graphs.")
def export_cmd(run_dirs, out_dir, data, no_eval, tolerance) -> None:
    """Export a run's encoder + emission layers to an ONNX model bundle (or, with --run
    repeated, the runs' output ensemble: e.g. export/softmax-x4, see README "Ensemble bundles").

    Writes fp32, graph-optimized fp32, int8 and fp16 graphs, the tokenizer, labels, CRF
    scores and a manifest; checks ONNX Runtime against PyTorch at shapes other than the
    traced one (failing above --tolerance) and scores every variant on DNRTI test.
    """
    from .data.dnrti import data_dir, load_split, unseen_mask
    from .export.build import ExportCheckError, build_bundle, calibration_sentences
    from .training.ensemble import load_runs

    check, calibration, eval_split = None, None, None
    try:
        directory = data_dir(data)
    except FileNotFoundError as exc:
        if not no_eval:
            raise click.ClickException(f"{exc} (or pass --no-eval)") from None
        directory = None
    if directory is not None:
        train_s, _ = load_split(directory, "train")
        valid_s, _ = load_split(directory, "valid")
        check = [s.tokens for s in valid_s]
        calibration = calibration_sentences(train_s)
        if not no_eval:
            test_s, _ = load_split(directory, "test")
            eval_split = ("test", test_s, unseen_mask(test_s, train_s))
    try:
        model, tokenizer = load_runs(run_dirs)
    except (FileNotFoundError, ValueError) as exc:  # RunError is a ValueError; so are weights that do not fit
        raise click.ClickException(str(exc)) from None
    try:
        manifest = build_bundle(list(run_dirs), out_dir, check_sentences=check, calibration=calibration, eval_split=eval_split,
                                tolerance=tolerance, log=lambda m: click.echo(m, err=True), model=model, tokenizer=tokenizer)
    except ExportCheckError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"bundle": out_dir, "variants": {k: v.get("f1", {}).get("f1") for k, v in manifest["variants"].items()}}))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per run instead of the table.")
def runs(run_dirs, as_json) -> None:
    """Training runs side by side (RUN: a directory `ner-batch train --out` wrote, e.g. runs/*, or its metrics.json).

    One row per run from its metrics.json: epochs (best), valid F1, valid-unseen F1 and valid
    new-name recall at the best epoch (what settings are chosen on), test F1, test-unseen F1
    and test new-name recall (reported only), wall minutes. A run with --average gets a
    second row: the best epoch of the trained weights, scored on valid in the same run. A
    run still going (or stopped) shows its best so far, marked unfinished. Needs no torch.
    """
    from .training.runs import RunError, format_runs, run_row

    rows, bad = [], []
    for d in run_dirs:
        try:
            rows.append(run_row(d))
        except RunError as exc:
            bad.append(str(exc))
    for line in bad:
        click.echo(f"skipped: {line}", err=True)
    if not rows:
        raise click.ClickException(f"expected at least one training run among {len(run_dirs)} given, found none")
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
    else:
        click.echo(format_runs(rows))
