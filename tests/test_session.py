"""Execution-provider choice and the fallback message (what can be tested without a GPU)."""

from __future__ import annotations

import pytest

from ner_batch.runtime.session import CPU, CUDA, DeviceError, EmissionModel, choose_providers, cuda_failure_reason


def test_cpu_is_cpu_only():
    assert choose_providers("cpu", [CUDA, CPU]).providers == [CPU]


def test_auto_prefers_cuda_when_listed():
    assert choose_providers("auto", ["TensorrtExecutionProvider", CUDA, CPU]).providers == [CUDA, CPU]


def test_auto_without_cuda_says_so():
    choice = choose_providers("auto", [CPU])
    assert choice.providers == [CPU]
    assert "no CUDAExecutionProvider here" in choice.note and "running on CPU" in choice.note


def test_cuda_without_provider_is_an_error_naming_what_was_found():
    with pytest.raises(DeviceError, match=r"--device cuda: expected ONNX Runtime's CUDAExecutionProvider, found only \['CPUExecutionProvider'\]"):
        choose_providers("cuda", [CPU])
    with pytest.raises(DeviceError, match="expected --device to be one of auto, cpu, cuda, got 'gpu'"):
        choose_providers("gpu", [CPU])


def _has_gpu() -> bool:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    return bool(exe) and subprocess.run([exe, "-L"], capture_output=True).returncode == 0


@pytest.mark.skipif(_has_gpu(), reason="needs a machine without a GPU")
def test_auto_on_this_machine_falls_back_once_with_a_message(tiny_bundles):
    notes = []
    model = EmissionModel(tiny_bundles["softmax"][0] / "model.onnx", device="auto", say=notes.append)
    assert model.device == "cpu"
    assert len(notes) == 1  # said once, whether CUDA is not listed or listed but cannot start
    assert "running on CPU" in notes[0]
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():  # onnxruntime-gpu without a GPU: the reason, in one line
        assert "could not start (" in notes[0] and "\n" not in notes[0]
        assert "no GPU, or CUDA/cuDNN libraries missing" not in notes[0], notes[0]  # the real reason, not a guess


def test_cuda_failure_reason_is_the_loader_error_in_one_line():
    log = ("\x1b[1;31m2026-11-25 09:33:57.071 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
           "/src/provider_bridge_ort.cc:2043 [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
           "/x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: "
           "No such file or directory\n\x1b[m\n")
    assert cuda_failure_reason(log) == "libcublasLt.so.13: cannot open shared object file: No such file or directory"
    assert cuda_failure_reason("") == "no GPU, or CUDA/cuDNN libraries missing"


@pytest.mark.skipif(_has_gpu(), reason="needs a machine without a GPU")
def test_cuda_on_this_machine_is_an_error(tiny_bundles):
    with pytest.raises(DeviceError, match="--device cuda"):
        EmissionModel(tiny_bundles["softmax"][0] / "model.onnx", device="cuda", say=print)


def test_cpu_says_nothing(tiny_bundles):
    notes = []
    EmissionModel(tiny_bundles["softmax"][0] / "model.onnx", device="cpu", say=notes.append)
    assert notes == []
