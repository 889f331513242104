"""SIGKILL a real `python training/pretrain.py` run at random instants, many of them while it writes a
checkpoint, and resume it each time: every survivor resumes, and the final weights equal those of the
uninterrupted run bit for bit (MoCo v2 with its BatchNorm MLP head, shuffled-BN splits, momentum encoder and
queue: all the state a resume has to restore)."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from training.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 16
# K=65536 makes the checkpoint ~38 MB, so that a write lasts long enough for random kills to land inside it.
ARGS = ["--method", "mocov2", "--model", "test_resnet", "--image-size", "32", "--batch-size", "32",
        "--data-args.num_samples", "128", "--knn.every", "0", "--threads", "1", "--max-steps", str(STEPS),
        "--save-every", "1", "--hparams.K", "65536", "--bn-splits", "2"]


def _start(out, resume):
    cmd = [sys.executable, os.path.join(REPO, "training", "pretrain.py"), *ARGS, "--output", str(out)]
    if resume:
        cmd += ["--resume", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _kill(proc, out, rng, at_write, deadline, full_size):
    """SIGKILL `proc` inside its `at_write`-th checkpoint write, once checkpoint.pt.tmp holds a random 5-95 % of
    the `full_size` bytes a checkpoint has (or its write has reached the fsync), or at `deadline` when
    `at_write` is None. A write starts when checkpoint.pt.tmp appears or checkpoint.pt is truncated (whichever
    way the trainer writes its checkpoint). (A fixed 0-60 ms delay instead missed most writes on a fast disk:
    2 of 5 landed inside one in a suite run.)"""
    tmp, final = os.path.join(out, CHECKPOINT + ".tmp"), os.path.join(out, CHECKPOINT)
    had_tmp, final_size, writes = _size(tmp) is not None, _size(final), 0
    while proc.poll() is None and time.time() < deadline:
        has_tmp, size = _size(tmp) is not None, _size(final)
        writes += (has_tmp and not had_tmp) or (size is not None and final_size is not None and size < final_size // 2)
        had_tmp, final_size = has_tmp, size
        if at_write is not None and writes >= at_write:
            target = rng.uniform(0.05, 0.95) * full_size
            while proc.poll() is None and time.time() < deadline:
                written = _size(tmp)
                if written is None or written >= target:  # (None: the write went in place or just renamed)
                    break
                time.sleep(0.0002)
            break
        time.sleep(0.0005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _final(out):
    state = torch.load(os.path.join(out, CHECKPOINT), weights_only=True)
    return state, load_file(os.path.join(out, "model.safetensors"))


@pytest.mark.long
def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    proc = _start(full, resume=False)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    full_size = os.stat(full / CHECKPOINT).st_size

    rng = random.Random(0)
    out = tmp_path / "killed"
    kills, mid_write, steps_seen, resumes = 0, 0, [], 0
    while True:
        resume = os.path.exists(out / CHECKPOINT) or os.path.exists(out / PREVIOUS)
        resumes += resume
        stale = _mtime(out / (CHECKPOINT + ".tmp"))  # a .tmp left by an earlier kill is not this run's write
        proc = _start(out, resume)
        if kills < 10:
            # half the kills wait for a checkpoint write, half land anywhere in the first seconds (start-up,
            # loading, a training step, metrics, the final export)
            at_write, deadline = (None, time.time() + rng.uniform(2.0, 6.0)) if kills % 2 else (rng.randint(1, 3), time.time() + 60)
            killer = threading.Thread(target=_kill, args=(proc, str(out), rng, at_write, deadline, full_size))
            killer.start()
            rc = proc.wait(timeout=300)
            killer.join()
        else:
            rc = proc.wait(timeout=300)
        err = proc.stderr.read()
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, f"run {kills} failed by itself (rc {rc}): {err[-3000:]}"
        kills += 1
        mid_write += _mtime(out / (CHECKPOINT + ".tmp")) not in (None, stale)
        if os.path.exists(out / CHECKPOINT) or os.path.exists(out / PREVIOUS):
            # the survivor is resumable: a complete checkpoint, never older than the last one seen
            step = load_checkpoint(str(out), log=lambda *_: None)["step"]
            assert not steps_seen or step >= steps_seen[-1], steps_seen + [step]
            steps_seen.append(step)
    assert kills >= 8 and resumes >= 5, (kills, resumes)  # (a kill before the first checkpoint starts afresh)
    assert mid_write >= 3, f"only {mid_write} of {kills} kills landed inside a checkpoint write"
    print(f"{kills} kills, {mid_write} inside a checkpoint write; checkpoint steps after each kill: {steps_seen}")
    assert len(set(steps_seen)) >= 3, steps_seen  # the kills spread over the run, not all at one step

    (a, wa), (b, wb) = _final(full), _final(out)
    assert a["step"] == b["step"] == STEPS
    assert a["method"].keys() == b["method"].keys()
    for k in a["method"]:  # online and momentum encoders, BatchNorm statistics, queue, pointer
        assert torch.equal(a["method"][k], b["method"][k]), k
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
