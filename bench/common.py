"""Benchmark helpers: timing with warm-up and repeats, peak RSS of a command, machine facts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable


def timed(fn: Callable[[], Any], *, warm: Callable[[], Any] | None = None, repeats: int = 3) -> dict[str, Any]:
    """Run ``warm`` (default: ``fn``) once untimed, then ``fn`` ``repeats`` times; median and all seconds."""
    result = (warm or fn)()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(runs), "runs_s": [round(r, 4) for r in runs], "result": result}


def peak_rss_mb(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh wrapper process; (peak RSS of its largest process in MB, seconds, stderr tail)."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "print(json.dumps({'rc': p.returncode, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        " 'seconds': dt, 'stderr': p.stderr[-2000:]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if info["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{info['stderr']}")
    return info["maxrss_kb"] / 1024.0, info["seconds"], info["stderr"]


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "onnxruntime-gpu", "onnxruntime", "optimum", "optimum-onnx", "numpy", "tokenizers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    from ner_batch.cpu import cpu_info

    return {"cpu": cpu, "cpu_features": cpu_info(), "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "platform": platform.platform(), "gpu": "none", "versions": versions}


class RssSampler:
    """Peak of the summed RSS of this process and of the processes whose command line
    ``match`` accepts (worker processes, Ray's actors and daemons), sampled every 0.1 s."""

    def __init__(self, match: Callable[[str], bool], every: float = 0.1):
        import threading

        self.match, self.every, self.peak_mb = match, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total_mb(self) -> float:
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if int(entry.name) != os.getpid() and not self.match(cmd):
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except (OSError, ValueError):
                continue
        return total / 1024.0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_mb = max(self.peak_mb, self._total_mb())

    def __enter__(self) -> "RssSampler":
        self.peak_mb = self._total_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
