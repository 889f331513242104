"""benchmarks/run.py: the alternating timer, the goal bookkeeping, and one real train row (clzoo's trainer step,
lightly's example step and the bare backbone on the same views)."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import run as bench  # noqa: E402


def test_alternate_interleaves_and_reverses_the_order(monkeypatch):
    calls = []
    clock = iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    t = bench.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert t == {"a": 1, "b": 1}  # each timed call spans one tick of the fake clock


def test_row_goals():
    assert bench.row("train_throughput_vs_lightly", "simclr", 250.0, 200.0, "images/s")["met"] is True
    slow = bench.row("train_throughput_vs_lightly", "simclr", 240.0, 200.0, "images/s")
    assert slow["ratio"] == 1.2 and slow["met"] is False
    assert bench.row("overhead_vs_backbone", "byol", 1.05, 1.0, "s/step")["met"] is True
    assert bench.row("overhead_vs_backbone", "byol", 1.2, 1.0, "s/step")["met"] is False
    assert bench.row("decode_imagefolder", "pil", 1.0, 2.0, "images/s")["met"] is None


def test_one_train_row_on_the_real_trainer():
    pytest.importorskip("lightly")
    rows = bench.bench_train(quick=True, methods=("simclr",))
    assert [r["benchmark"] for r in rows] == ["train_throughput_vs_lightly", "overhead_vs_backbone"]
    thr, over = rows
    assert thr["ratio"] == pytest.approx(thr["clzoo"] / thr["baseline"], rel=1e-2)
    assert 0 < thr["clzoo"] and 0 < thr["baseline"]
    # the method adds a head and a loss to the backbone's own step: never faster than the backbone alone by much
    assert over["ratio"] > 0.8
    assert "resnet18 32 px, batch 64, 2 views" in thr["detail"]


def test_gpu_script_picks_the_largest_batch_that_fits():
    import gpu
    tried = []

    def trial(b):
        tried.append(b)
        if b > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"sides at {b}"
    assert gpu.largest_batch(trial, [32, 256, 64, 128]) == (64, "sides at 64")
    assert tried == [256, 128, 64]
    with pytest.raises(RuntimeError, match="no batch of \\[256, 128\\] fits"):
        gpu.largest_batch(lambda b: trial(b * 4), [128, 256])
    with pytest.raises(ValueError):  # anything but running out of memory is a real error
        gpu.largest_batch(lambda b: (_ for _ in ()).throw(ValueError("bad")), [8])


def test_gpu_script_smoke_on_cpu(tmp_path):
    pytest.importorskip("lightly")
    import gpu
    out = tmp_path / "gpu.json"
    assert gpu.main(["--quick", "--methods", "simclr", "--batches", "8", "--rounds", "1", "--steps", "1",
                     "--output", str(out)]) == 0
    (r,) = json.load(open(out))["rows"]
    assert (r["method"], r["batch"], r["views"], r["precision"]) == ("simclr", 8, 2, "no")
    assert r["ratio"] == pytest.approx(r["clzoo_images_s"] / r["lightly_images_s"], rel=2e-2)
    assert r["clzoo_peak_gib"] is None and r["clzoo_views_images_s"] > 0  # no GPU here
