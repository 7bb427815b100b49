"""A model bundle on disk, loaded and checked without torch.

Layout (see export/README.md)::

    manifest.json      format, head, backbone, max_length, labels, variants, checks, checksums, versions
    labels.json        the L labels, in emission order
    tokenizer.json     the backbone's fast tokenizer
    crf.json           CRF transitions (L x L), start (L), end (L)   [crf head only]
    model.onnx         fp32 graph: input_ids, attention_mask, word_index, word_mask -> emissions (B, W, L)
    model.opt.onnx     fp32 with ONNX Runtime's transformer fusions
    model.int8.onnx    static int8 (QDQ, calibrated): output independent of batch-mates
    model.int8-dynamic.onnx  dynamic int8: activation scales per batch (output depends on batching)
    model.fp16.onnx    fp16 for CUDA (fp32 inputs and outputs)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import validate_labels

FORMAT = "ner-batch-bundle"
FORMAT_VERSION = 2  # 2: int8 is static (batch-independent), int8-dynamic added, CPU recorded with int8 F1
MANIFEST = "manifest.json"
LABELS = "labels.json"
TOKENIZER = "tokenizer.json"
CRF = "crf.json"
VARIANT_FILES = {"fp32": "model.onnx", "opt": "model.opt.onnx", "int8": "model.int8.onnx",
                 "int8-dynamic": "model.int8-dynamic.onnx", "fp16": "model.fp16.onnx"}
#: Variants whose output for a sentence does not depend on the other sentences of its batch
#: (checked by tests/test_cuts.py); int8-dynamic's activation scales come from the whole batch.
BATCH_INDEPENDENT = ("fp32", "opt", "int8")


class BundleError(ValueError):
    """A bundle is missing, incomplete, corrupted or does not match itself."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    labels: list[str]
    crf: dict[str, np.ndarray] | None  # transitions (L, L), start (L,), end (L,)

    @property
    def head(self) -> str:
        return self.manifest["head"]

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    def model_path(self, variant: str) -> Path:
        if variant not in VARIANT_FILES:
            raise BundleError(f"expected a variant among {list(VARIANT_FILES)}, got {variant!r}")
        if variant not in self.manifest.get("variants", {}):
            raise BundleError(f"{self.path}: bundle has no {variant!r} variant (it has {list(self.manifest.get('variants', {}))})")
        return self.path / VARIANT_FILES[variant]

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "Bundle":
        """Read and check a bundle. ``verify`` also compares every file's sha256 with the manifest."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"expected a model bundle directory at {path}, found {'a file' if path.exists() else 'nothing'}; run `make export`")
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{path}: expected {MANIFEST} in a model bundle, found none; is this an export/ directory?")
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError as exc:
            raise BundleError(f"{mpath}: expected JSON, found a parse error: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{mpath}: expected format {FORMAT!r}, found {manifest.get('format')!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{mpath}: expected bundle format version {FORMAT_VERSION}, found {manifest.get('format_version')}; re-export it with this version"
            )
        files: dict[str, str] = manifest.get("files", {})
        for name, digest in files.items():
            f = path / name
            if not f.is_file():
                raise BundleError(f"{path}: expected {name} (listed in {MANIFEST}), found it missing; re-run `make export`")
            if verify and sha256(f) != digest:
                raise BundleError(f"{path}: {name} does not match its checksum in {MANIFEST} (corrupted or replaced); re-run `make export`")
        for name in (LABELS, TOKENIZER):
            if name not in files:
                raise BundleError(f"{path}: expected {name} in the bundle, found it missing from {MANIFEST}")
        labels = json.loads((path / LABELS).read_text())
        try:
            labels = validate_labels(labels, where=f"{path / LABELS}")
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        n = int(manifest.get("num_labels", -1))
        if len(labels) != n:
            raise BundleError(f"{path}: expected {n} labels in {LABELS} (manifest num_labels), got {len(labels)}")
        crf = None
        if manifest.get("head") == "crf":
            if CRF not in files:
                raise BundleError(f"{path}: a crf bundle needs {CRF}, found it missing")
            raw = json.loads((path / CRF).read_text())
            crf = {k: np.asarray(raw[k], dtype=np.float32) for k in ("transitions", "start", "end")}
            if crf["transitions"].shape != (n, n) or crf["start"].shape != (n,) or crf["end"].shape != (n,):
                raise BundleError(
                    f"{path / CRF}: expected transitions ({n}, {n}), start ({n},), end ({n},), found "
                    f"{crf['transitions'].shape}, {crf['start'].shape}, {crf['end'].shape}"
                )
        elif manifest.get("head") != "softmax":
            raise BundleError(f"{mpath}: expected head 'softmax' or 'crf', found {manifest.get('head')!r}")
        return cls(path, manifest, labels, crf)
