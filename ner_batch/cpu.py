"""What the CPU can do for int8: its model and the x86 features that decide int8 speed and accuracy.

Torch-free. ONNX Runtime's int8 kernels use VNNI (``avx512_vnni`` or ``avx_vnni``) where the
CPU has it; without it, U8S8 products go through 16-bit intermediate sums that can saturate,
which is why the static int8 variant is exported with 7-bit weights (``reduce_range``).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


@functools.lru_cache(maxsize=None)
def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """``{"model", "flags" (the int8-relevant ones present), "class"}``; class is one of
    ``avx512-vnni``, ``avx-vnni``, ``avx512``, ``avx2``, ``other`` or ``unknown``."""
    model, flags = platform.processor() or platform.machine(), None
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.processor() or platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and flags is None:
                flags = set(value.split())
    except OSError:
        pass
    if flags is None:
        return {"model": model, "flags": [], "class": "unknown"}
    present = [f for f in FEATURES if f in flags]
    return {"model": model, "flags": present, "class": cpu_class(present)}


def cpu_class(flags) -> str:
    flags = set(flags)
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def has_vnni() -> bool:
    return cpu_info()["class"] in ("avx512-vnni", "avx-vnni")


def describe() -> str:
    info = cpu_info()
    return f"{info['model']} ({info['class']}: {', '.join(info['flags']) or 'no AVX2'})"
