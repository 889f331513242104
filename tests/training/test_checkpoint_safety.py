"""--resume reads no code and explains every bad file in one line; checkpoints survive a kill at any instant;
a resumed run's TensorBoard has no duplicate steps. All through training/pretrain.py's real code path."""

import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from training import pretrain
from training.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint
from training.methods.simclr import SimCLR

TINY = ["--model", "test_resnet", "--image-size", "32", "--batch-size", "32", "--data-args.num_samples", "128",
        "--knn.every", "0", "--threads", "1"]


def run(out, *args):
    return pretrain.main([*TINY, "--output", str(out), *args])


class _RunsCommand:
    """What an attacker puts in a checkpoint: unpickling it calls os.system."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --resume"), err
    return lines[0]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A 2-step SimCLR run that saved a checkpoint at each step (checkpoint.pt + checkpoint.prev.pt)."""
    out = tmp_path_factory.mktemp("good") / "run"
    assert run(out, "--method", "simclr", "--max-steps", "2", "--save-every", "1") == 0
    return out


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "shared_run"
    run_dir.mkdir()
    torch.save({"config": _RunsCommand(f"touch {marker}"), "step": 0}, run_dir / CHECKPOINT)
    assert pretrain.main([*TINY, "--method", "simclr", "--output", str(tmp_path / "out"),
                          "--resume", str(run_dir)]) == 2
    line = _one_line_error(capsys)
    assert "refused" in line and "could run code" in line
    assert not marker.exists()
    # the file really is the attack the issue describes: an unrestricted load runs the command
    torch.load(run_dir / CHECKPOINT, weights_only=False)
    assert marker.exists()


def test_checkpoint_holds_only_plain_data(good_run):
    state = torch.load(good_run / CHECKPOINT, weights_only=True)  # raises if anything else is in it
    assert isinstance(state["config"], str) and "method: simclr" in state["config"]
    assert state["step"] == 2 and torch.load(good_run / PREVIOUS, weights_only=True)["step"] == 1


def _bad_files(tmp, good_run):
    good = (good_run / CHECKPOINT).read_bytes()
    files = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "not a torch file": b"this is a text file\n" * 10,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / (name.replace(" ", "_") + ".pt")
        paths[name].write_bytes(data)
    paths["a plain state_dict"] = tmp / "state_dict.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, paths["a plain state_dict"])
    paths["a safetensors file"] = tmp / "model.safetensors"
    save_file({"w": torch.zeros(2)}, paths["a safetensors file"])
    paths["an empty directory"] = tmp / "empty_dir"
    paths["an empty directory"].mkdir()
    paths["a missing path"] = tmp / "nowhere"
    return paths


EXPECTED = {"empty": "is empty (0 bytes)", "truncated": "probably truncated",
            "not a torch file": "not a readable torch checkpoint",
            "a plain state_dict": "not a clzoo training checkpoint",
            "a safetensors file": "not a clzoo training checkpoint",
            "an empty directory": "neither checkpoint.pt nor checkpoint.prev.pt",
            "a missing path": "no checkpoint at"}


def test_every_bad_file_gets_one_line(tmp_path, good_run, capsys):
    for name, path in _bad_files(tmp_path, good_run).items():
        rc = pretrain.main([*TINY, "--method", "simclr", "--max-steps", "3", "--output", str(tmp_path / "o"),
                            "--resume", str(path)])
        line = _one_line_error(capsys)
        assert rc == 2 and EXPECTED[name] in line and str(path) in line, (name, line)


@pytest.mark.parametrize("change, named", [(["--method", "mocov2"], "method is 'mocov2'"),
                                           (["--method", "simclr", "--model", "resnet18"], "model is 'resnet18'"),
                                           (["--method", "simclr", "--hparams.tau", "0.5"], "hparams is"),
                                           (["--method", "simclr", "--batch-size", "64"], "batch_size is 64")])
def test_checkpoint_of_another_configuration_is_refused(tmp_path, good_run, capsys, change, named):
    argv = [*TINY, "--max-steps", "3", "--output", str(tmp_path / "o"), *change, "--resume", str(good_run)]
    assert pretrain.main(argv) == 2
    line = _one_line_error(capsys)
    assert "another configuration" in line and named in line, line


def test_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, good_run, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(good_run, run_dir)
    data = (run_dir / CHECKPOINT).read_bytes()
    (run_dir / CHECKPOINT).write_bytes(data[:100])  # as a crash mid-write on a filesystem without rename
    assert load_checkpoint(str(run_dir), log=lambda *_: None)["step"] == 1
    moved = run_dir / "damaged.pt"
    os.replace(run_dir / CHECKPOINT, moved)  # as a kill between save_checkpoint's two renames
    assert load_checkpoint(str(run_dir), log=lambda *_: None)["step"] == 1
    os.replace(moved, run_dir / CHECKPOINT)
    assert run(run_dir, "--method", "simclr", "--max-steps", "2", "--save-every", "1",
               "--resume", str(run_dir)) == 0
    out = capsys.readouterr().out
    assert "probably truncated" in out and "using" in out and PREVIOUS in out
    fresh, resumed = (torch.load(d / CHECKPOINT, weights_only=True) for d in (good_run, run_dir))
    assert resumed["step"] == 2
    for k, v in fresh["method"].items():
        assert torch.equal(v, resumed["method"][k]), k


def _scalar_steps(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars("train/loss")]


def test_resumed_tensorboard_has_no_duplicate_steps(tmp_path, monkeypatch):
    original = SimCLR.after_optimizer_step if hasattr(SimCLR, "after_optimizer_step") else None

    def killed(self, step):
        if original is not None:
            original(self, step)
        if step == 5:  # dies after logging step 5; the last checkpoint is from step 3
            raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    args = ["--method", "simclr", "--max-steps", "8", "--save-every", "3"]
    monkeypatch.setattr(SimCLR, "after_optimizer_step", killed)
    with pytest.raises(KeyboardInterrupt):
        run(run_dir, *args)
    monkeypatch.undo()
    assert run(run_dir, *args, "--resume", str(run_dir)) == 0
    assert _scalar_steps(run_dir) == list(range(1, 9))
    assert [json.loads(ln)["step"] for ln in open(run_dir / "metrics.jsonl")] == list(range(1, 9))
