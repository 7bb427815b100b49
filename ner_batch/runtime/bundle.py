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
    verify: bool = True
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> sha256, from the manifest

    @property
    def head(self) -> str:
        return self.manifest["head"]

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def shape_markers(self) -> bool:
        return bool(self.manifest.get("shape_markers", False))

    def model_path(self, variant: str) -> Path:
        """The variant's ONNX file: listed in the manifest, inside the bundle, and (when the
        bundle was loaded with ``verify``) matching its checksum, hashed once per process."""
        if variant not in VARIANT_FILES:
            raise BundleError(f"expected a variant among {list(VARIANT_FILES)}, got {variant!r}")
        if variant not in self.manifest.get("variants", {}):
            raise BundleError(f"{self.path}: bundle has no {variant!r} variant (it has {list(self.manifest.get('variants', {}))})")
        name = VARIANT_FILES[variant]
        path = self._listed(name)
        if self.verify:
            self._check(name)
        return path

    def _listed(self, name: str) -> Path:
        if name not in self.files:
            raise BundleError(f"{self.path}: {name} is not listed with a checksum in {MANIFEST}; refusing to load an "
                              "unverified file; re-run `make export`")
        path = self.path / name
        if not path.is_file():
            raise BundleError(f"{self.path}: expected {name} (listed in {MANIFEST}), found it missing; re-run `make export`")
        if path.is_symlink() or path.resolve().parent != self.path.resolve():
            raise BundleError(f"{self.path}: {name} is a link out of the bundle; expected a plain file inside it")
        return path

    def _check(self, name: str) -> None:
        path = self.path / name
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _VERIFIED:
            return
        if sha256(path) != self.files[name]:
            raise BundleError(f"{self.path}: {name} does not match its checksum in {MANIFEST} (corrupted or replaced); re-run `make export`")
        _VERIFIED.add(key)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "Bundle":
        """Read and check a bundle. Every file the runtime opens must be a plain name inside
        the bundle, listed in the manifest with its sha256; ``verify`` compares the small files
        now and a model file when :meth:`model_path` hands it out."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"expected a model bundle directory at {path}, found {'a file' if path.exists() else 'nothing'}; run `make export`")
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{path}: expected {MANIFEST} in a model bundle, found none; is this an export/ directory?")
        try:
            manifest = json.loads(mpath.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BundleError(f"{mpath}: expected JSON, found a parse error: {exc}") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{mpath}: expected a JSON object, found {type(manifest).__name__}")
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{mpath}: expected format {FORMAT!r}, found {manifest.get('format')!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{mpath}: expected bundle format version {FORMAT_VERSION}, found {manifest.get('format_version')}; re-export it with this version"
            )
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise BundleError(f"{mpath}: expected 'files' to map file names to sha256 strings, found {type(files).__name__}")
        for name in files:
            if name in ("", ".", "..") or "/" in name or "\\" in name or name != Path(name).name or name == MANIFEST:
                raise BundleError(f"{mpath}: expected plain file names inside the bundle in 'files', found {name!r}")
        if not isinstance(manifest.get("variants", {}), dict):
            raise BundleError(f"{mpath}: expected 'variants' to be an object, found {type(manifest.get('variants')).__name__}")
        n = manifest.get("num_labels")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BundleError(f"{mpath}: expected num_labels to be a positive integer, found {n!r}")
        if not isinstance(manifest.get("max_length"), int) or manifest["max_length"] < 4:
            raise BundleError(f"{mpath}: expected max_length to be an integer of at least 4, found {manifest.get('max_length')!r}")
        if not isinstance(manifest.get("shape_markers", False), bool):
            raise BundleError(f"{mpath}: expected shape_markers to be true or false, found {manifest.get('shape_markers')!r}")
        bundle = cls(path, manifest, [], None, verify=verify, files=files)
        for name in (LABELS, TOKENIZER) + ((CRF,) if manifest.get("head") == "crf" else ()):
            bundle._listed(name)
            if verify:
                bundle._check(name)
        labels = _read_json(path / LABELS)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise BundleError(f"{path / LABELS}: expected a JSON list of label strings, found {type(labels).__name__}")
        try:
            labels = validate_labels(labels, where=f"{path / LABELS}")
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        if len(labels) != n:
            raise BundleError(f"{path}: expected {n} labels in {LABELS} (manifest num_labels), got {len(labels)}")
        bundle.labels = labels
        if manifest.get("head") == "crf":
            raw = _read_json(path / CRF)
            missing = [k for k in ("transitions", "start", "end") if not isinstance(raw, dict) or k not in raw]
            if missing:
                raise BundleError(f"{path / CRF}: expected keys transitions, start and end, found {missing} missing")
            try:
                crf = {k: np.asarray(raw[k], dtype=np.float32) for k in ("transitions", "start", "end")}
            except (ValueError, TypeError) as exc:
                raise BundleError(f"{path / CRF}: expected numbers, found {exc}") from None
            if crf["transitions"].shape != (n, n) or crf["start"].shape != (n,) or crf["end"].shape != (n,):
                raise BundleError(
                    f"{path / CRF}: expected transitions ({n}, {n}), start ({n},), end ({n},), found "
                    f"{crf['transitions'].shape}, {crf['start'].shape}, {crf['end'].shape}"
                )
            bundle.crf = crf
        elif manifest.get("head") != "softmax":
            raise BundleError(f"{mpath}: expected head 'softmax' or 'crf', found {manifest.get('head')!r}")
        return bundle


#: Model files whose checksum this process has verified: (resolved path, size, mtime_ns).
_VERIFIED: set[tuple[str, int, int]] = set()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: expected JSON, found a parse error: {exc}") from None
