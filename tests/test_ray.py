"""--engine ray: the same shards on Ray actors, the same output as local, faults survived."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ner_batch.runtime.session import device_id_for_worker, gpu_count

GOOD = "APT28 used X-Agent against targets in Eastern Europe. The Lazarus Group deployed Poison Ivy."


def test_local_workers_take_gpus_round_robin(monkeypatch):
    assert [device_id_for_worker(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [device_id_for_worker(i, 0) for i in range(3)] == [0, 0, 0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_count() == 0


def test_local_workers_are_given_their_device_ids(monkeypatch):
    """With two GPUs visible, three spawned workers are built to open devices 0, 1, 0."""
    import queue
    import types

    from ner_batch.pipeline import run as run_mod
    from ner_batch.pipeline.worker import TagSettings

    seen = []

    class FakeProcess:
        def __init__(self, target, args, daemon, name):
            seen.append(args[0].device_id)

        def start(self):
            raise RuntimeError("stop here")

    ctx = types.SimpleNamespace(Queue=lambda maxsize=0: queue.Queue(), Process=FakeProcess)
    monkeypatch.setattr(run_mod.mp, "get_context", lambda kind: ctx)
    monkeypatch.setattr(run_mod, "gpu_count", lambda: 2)
    with pytest.raises(RuntimeError, match="stop here"):
        run_mod._run_workers(TagSettings("b", device="cuda"), types.SimpleNamespace(path="w"), iter([]), None, 3, print)
    assert seen == [0, 1, 0]
    seen.clear()
    with pytest.raises(RuntimeError, match="stop here"):
        run_mod._run_workers(TagSettings("b", device="cpu"), types.SimpleNamespace(path="w"), iter([]), None, 3, print)
    assert seen == [0, 0, 0]


ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")


@pytest.fixture(scope="session")
def ray_session():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False,
                 logging_level="ERROR")
    yield ray
    ray.shutdown()


def make_corpus(root: Path, n: int) -> Path:
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(n):
        (corpus / f"d{i:03d}.txt").write_text(f"Report {i}. " + GOOD * (1 + i % 5))
    (corpus / "bad.txt").write_bytes(b"\xff\xfe\x00binary")
    (corpus / "lines.jsonl").write_text(json.dumps({"id": "j", "tokens": ["APT28", "struck"]}) + "\n{broken\n")
    return corpus


def test_ray_output_is_byte_identical_to_local(tmp_path, tiny_bundles, ray_session):
    from ner_batch.pipeline.run import tag_corpus

    corpus = make_corpus(tmp_path, 30)
    bundle = str(tiny_bundles["crf"][0])
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    quiet = dict(progress=False, say=lambda m: None, shard_docs=4, device="cpu")
    tag_corpus([str(corpus)], bundle, local, workers=2, **quiet)
    summary = tag_corpus([str(corpus)], bundle, on_ray, workers=2, engine="ray", **quiet)
    assert on_ray.read_bytes() == local.read_bytes()
    assert summary.documents == 33 and summary.errors == 2
    assert not (tmp_path / "ray.jsonl.parts").exists()


def test_an_actor_killed_mid_run_has_its_shards_redone(tmp_path, tiny_bundles, ray_session, monkeypatch):
    from ner_batch.pipeline import ray_engine
    from ner_batch.pipeline.run import tag_corpus

    corpus = make_corpus(tmp_path, 120)
    bundle = str(tiny_bundles["crf"][0])
    reference = tmp_path / "ref.jsonl"
    quiet = dict(progress=False, say=lambda m: None, shard_docs=2, device="cpu")
    tag_corpus([str(corpus)], bundle, reference, **quiet)
    pids: list[int] = []
    original = ray_engine.run_ray

    def run_ray(*args, **kw):
        return original(*args, **kw, on_actors=lambda infos: pids.extend(i["pid"] for i in infos))

    killed = []

    def killer():
        done = tmp_path / "out.jsonl.parts" / "done.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline:
            if pids and done.is_file() and len(done.read_text().splitlines()) >= 3:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.01)

    monkeypatch.setattr(ray_engine, "run_ray", run_ray)
    out = tmp_path / "out.jsonl"
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        summary = tag_corpus([str(corpus)], bundle, out, workers=2, engine="ray", **quiet)
    finally:
        thread.join()
    assert killed, "the actor was not killed mid-run"
    assert out.read_bytes() == reference.read_bytes()
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == summary.documents == 123 and len({r["id"] for r in recs}) == 123


def test_driver_killed_then_resumed_with_ray(tmp_path, tiny_bundles):
    corpus = make_corpus(tmp_path, 150)
    bundle = str(tiny_bundles["crf"][0])
    ref = tmp_path / "ref.jsonl"
    base = [sys.executable, "-m", "ner_batch.cli", "tag", str(corpus), "--bundle", bundle, "--shard-docs", "2", "--device", "cpu", "-q"]
    subprocess.run(base + ["--out", str(ref)], check=True, timeout=300)
    out = tmp_path / "out.jsonl"
    cmd = base + ["--out", str(out), "--engine", "ray", "--workers", "2"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    done = tmp_path / "out.jsonl.parts" / "done.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (done.is_file() and len(done.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.read_bytes() == ref.read_bytes()


def test_ray_errors_are_one_line(tmp_path, tiny_bundles):
    doc = tmp_path / "d.txt"
    doc.write_text(GOOD)
    res = subprocess.run([sys.executable, "-m", "ner_batch.cli", "tag", str(doc), "--bundle", str(tiny_bundles["crf"][0]),
                          "--out", str(tmp_path / "o.jsonl"), "--engine", "ray", "--ray-address", "127.0.0.1:1", "-q"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "cannot start or reach Ray (address 127.0.0.1:1)" in res.stderr
