"""ONNX Runtime sessions: execution-provider choice, thread settings, and running a batch.

``--device auto`` uses CUDA when ONNX Runtime can start it and says once why it fell back
to the CPU otherwise; ``--device cuda`` where CUDA cannot start is an error naming what was
found. On CUDA, inputs and outputs go through I/O binding.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


@dataclasses.dataclass
class ProviderChoice:
    providers: list[str]
    note: str  # one sentence for the user ("" when nothing worth saying)


def choose_providers(device: str, available: Sequence[str]) -> ProviderChoice:
    """Which execution providers to ask for, before trying to start them.

    ``available`` is ``onnxruntime.get_available_providers()``: with onnxruntime-gpu it lists
    CUDA even where no GPU or CUDA library is present, so :func:`create_session` checks
    which provider the session really got.
    """
    if device not in DEVICES:
        raise DeviceError(f"expected --device to be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return ProviderChoice([CPU], "")
    if CUDA in available:
        return ProviderChoice([CUDA, CPU], "")
    if device == "cuda":
        raise DeviceError(
            f"--device cuda: expected ONNX Runtime's {CUDA}, found only {list(available)}; "
            "install onnxruntime-gpu with CUDA and cuDNN, or use --device cpu"
        )
    return ProviderChoice([CPU], f"device auto: ONNX Runtime has no {CUDA} here (providers: {', '.join(available)}); running on CPU")


def gpu_count() -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0


def device_id_for_worker(worker: int, gpus: int) -> int:
    """The CUDA device a local worker opens: round-robin over the machine's GPUs."""
    return worker % gpus if gpus > 0 else 0


def session_options(threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def _captured_stderr(fn):
    """``(fn(), what the process wrote to file descriptor 2 meanwhile)``: ONNX Runtime's C++
    logger writes there directly, so sys.stderr cannot catch it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            result = fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return result, tmp.read().decode("utf-8", errors="replace")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cuda_failure_reason(log: str) -> str:
    """The one line that says why the CUDA provider did not start, from ONNX Runtime's log."""
    lines = [_ANSI.sub("", line).strip() for line in log.splitlines()]
    for line in lines:
        m = re.search(r"with error: (.+)$", line)
        if m:
            return m.group(1).strip()
    for line in lines:
        if "CUDA" in line or "cuda" in line:
            return re.sub(r"^.*?\] ", "", line)[:300]
    return "no GPU, or CUDA/cuDNN libraries missing"


def create_session(model_path: str | Path, device: str = "auto", threads: int = 0, *, device_id: int = 0,
                   say: Callable[[str], None] | None = None):
    """An InferenceSession on the chosen device (CUDA device ``device_id``); ``say`` receives
    the one-line device note."""
    import onnxruntime as ort

    say = say or (lambda msg: print(msg, file=sys.stderr))
    choice = choose_providers(device, ort.get_available_providers())
    providers: list = [(CUDA, {"device_id": int(device_id)}) if p == CUDA else p for p in choice.providers]
    log = ""
    if CUDA in choice.providers:  # a failed CUDA start logs several raw lines: keep them, say the reason once
        ort.set_default_logger_severity(3)
        try:
            session, log = _captured_stderr(
                lambda: ort.InferenceSession(str(model_path), session_options(threads), providers=providers))
        finally:
            ort.set_default_logger_severity(2)
    else:
        session = ort.InferenceSession(str(model_path), session_options(threads), providers=choice.providers)
    got = session.get_providers()
    if CUDA in choice.providers and CUDA not in got:
        reason = cuda_failure_reason(log)
        if device == "cuda":
            raise DeviceError(f"--device cuda: ONNX Runtime lists {CUDA} but could not start it ({reason}); "
                              f"session got {got}; use --device cpu")
        say(f"device auto: {CUDA} could not start ({reason}); running on CPU")
    elif choice.note:
        say(choice.note)
    return session


class EmissionModel:
    """Runs the exported graph: the four arrays of a Batch in, word emissions (B, W, L) out."""

    INPUTS = ("input_ids", "attention_mask", "word_index", "word_mask")

    def __init__(self, model_path: str | Path, device: str = "auto", threads: int = 0, say=None, device_id: int = 0):
        self.session = create_session(model_path, device, threads, device_id=device_id, say=say)
        self.on_cuda = CUDA in self.session.get_providers()
        # A softmax graph does not read word_mask, and the exporter drops unused inputs.
        self.input_names = [i.name for i in self.session.get_inputs()]
        if not set(self.INPUTS[:3]) <= set(self.input_names) <= set(self.INPUTS):
            raise ValueError(f"{model_path}: expected graph inputs {list(self.INPUTS)}, found {self.input_names}")
        self.output = self.session.get_outputs()[0].name

    @property
    def device(self) -> str:
        return "cuda" if self.on_cuda else "cpu"

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: inputs[k] for k in self.input_names}
        if not self.on_cuda:
            return self.session.run([self.output], inputs)[0]
        binding = self.session.io_binding()
        for name, arr in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        binding.bind_output(self.output, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

