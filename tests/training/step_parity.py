"""Shared by the step-parity tests: clzoo's trainer takes the official trainer's optimizer steps.

A fixture (tests/data/step_parity/<name>.json + <name>.safetensors) is written by the generator script
beside it, which runs the official repository's own training code (its commit is in the JSON). It holds,
in clzoo's key names:
  init/<key>             the method's state_dict before the first step (online, momentum, heads, queue...)
  views/<step>/<i>       the views of each step's batch, in the order the method takes them (batch["views"])
  index/<step>           the sample indices of each step's batch (memory-bank methods), optional
  jigsaw/<step>          the jigsaw patches of each step's batch (B, 9, C, h, w), in the order the head takes
                         them, optional
  final/<key>            every tensor of the state_dict after the last step, as the official code left it
and in the JSON: "argv" (pretrain.py arguments that give clzoo the official setting), "losses" (one per
step), "total_steps", "steps_per_epoch", "num_samples", "repo", "commit", "atol", optionally "first_step" (the global step of the first
fixture step, for schedules read past their warmup), and "dtype" (float32, or
float64 where the official code's own float32 rounding moves a loss by more than atol: both sides then run in
float64).

`clzoo_steps` runs the trainer's own `optimizer_step` (training/pretrain.py) on those views: no copy of the
training loop here."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "step_parity")


def load_fixture(name: str) -> tuple[dict, dict]:
    with open(os.path.join(FIXTURES, f"{name}.json")) as f:
        meta = json.load(f)
    return meta, load_file(os.path.join(FIXTURES, f"{name}.safetensors"))


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def momentum_params(tensors: dict) -> list[str]:
    """The fixture's final momentum-encoder parameters (not its BN buffers, which its own forward updates)."""
    return [k for k in tensors if k.startswith("final/momentum_") and not k.endswith(BUFFERS)]


def with_pending_momentum_update(tensors: dict, m: float) -> dict:
    """The fixture with the official momentum encoder advanced by the update the official code applies at the
    start of the next forward (MoCo v1/v2 and v3 builder.py: m k + (1 - m) q), which clzoo applies right after
    each optimizer step (`after_optimizer_step`): the same sequence, one call earlier."""
    out = dict(tensors)
    for k in momentum_params(tensors):
        online = "final/" + k[len("final/momentum_"):]
        out[k] = tensors[k] * m + tensors[online] * (1.0 - m)
    return out


def step_batches(tensors: dict, steps: int) -> list[dict]:
    batches = []
    for s in range(steps):
        views = _prefixed(tensors, f"views/{s}/")
        batch = {"views": [views[str(i)] for i in range(len(views))]}
        if f"index/{s}" in tensors:
            batch["index"] = tensors[f"index/{s}"]
        if f"jigsaw/{s}" in tensors:
            batch["jigsaw"] = tensors[f"jigsaw/{s}"]
        batches.append(batch)
    return batches


def clzoo_steps(meta: dict, tensors: dict, tmp_path) -> tuple[list[float], dict]:
    """(losses, final state_dict) of clzoo's trainer from the fixture's initial state on its views."""
    from accelerate import Accelerator

    from training.config import load_config
    from training.methods import TrainInfo
    from training.pretrain import Schedule, initial_method, make_optimizer, optimizer_step

    cfg = load_config([*meta["argv"], "--output", str(tmp_path / "run")])
    info = TrainInfo(meta["num_samples"], meta["total_steps"], meta["steps_per_epoch"], cfg["batch_size"],
                     cfg["seed"])
    torch.manual_seed(cfg["seed"])
    method = initial_method(cfg, info, log=lambda *_: None)
    init = _prefixed(tensors, "init/")
    if any(v.dtype == torch.float64 for v in init.values()):
        method.double()  # a float64 fixture: where float32 rounding alone exceeds atol (see its JSON "dtype")
    result = method.load_state_dict(init, strict=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    optimizer = make_optimizer(cfg, method)
    schedule = Schedule(cfg, meta["total_steps"], meta["steps_per_epoch"])
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    method, optimizer = accelerator.prepare(method, optimizer)
    method.train()
    losses = []
    for s, batch in enumerate(step_batches(tensors, len(meta["losses"]))):
        step = meta.get("first_step", 0) + s
        loss, _ = optimizer_step(accelerator, method, optimizer, [batch], step, cfg, schedule)
        losses.append(float(loss))
    return losses, accelerator.unwrap_model(method).state_dict()


def assert_matches(meta: dict, tensors: dict, losses: list[float], state: dict) -> tuple[float, float]:
    """Asserts every loss and every final tensor within the fixture's atol; returns and prints (max |loss diff|,
    max |tensor diff|), the numbers of README's step-parity table (`pytest -m step_parity -s`)."""
    atol = meta.get("atol", 1e-5)
    loss_diff = 0.0
    for s, (mine, theirs) in enumerate(zip(losses, meta["losses"])):
        assert abs(mine - theirs) <= atol, f"step {s}: loss {mine} vs official {theirs}"
        loss_diff = max(loss_diff, abs(mine - theirs))
    final = _prefixed(tensors, "final/")
    assert final, "the fixture has no final tensors"
    tensor_diff = 0.0
    for k, v in final.items():
        assert k in state, f"{k}: in the official final state, not in clzoo's method"
        diff = (state[k].double() - v.double()).abs().max().item() if v.numel() else 0.0
        assert diff <= atol, f"{k}: max |diff| {diff:.3g} > {atol} after {len(losses)} steps"
        tensor_diff = max(tensor_diff, diff)
    print(f"step parity {meta['repo']} @ {meta['commit'][:8]} ({meta.get('dtype', 'float32')}, {len(losses)} steps, "
          f"{len(final)} tensors): max |loss diff| {loss_diff:.2e}, max |tensor diff| {tensor_diff:.2e}")
    return loss_diff, tensor_diff


def bn_sizes(meta: dict, tensors: dict) -> dict[str, int]:
    """Values per channel that each backbone BatchNorm2d normalises over (batch x height x width) on one of the
    fixture's views (`views/0/0`), by backbone module name."""
    import clzoo

    from training.config import load_config

    cfg = load_config([*meta["argv"], "--output", "unused"])
    model = clzoo.create_model(cfg["model"], pretrained=False, num_classes=0, **cfg["model_args"]).train()
    sizes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: sizes.__setitem__(name, inp[0].numel() // inp[0].shape[1])))
    with torch.no_grad():
        model(tensors["views/0/0"].float())
    for h in hooks:
        h.remove()
    return sizes


def with_setting(argv: list, flag: str, value: str) -> list:
    """The fixture's argv with `flag` set to `value` (replaced, or appended when the fixture leaves it to the
    recipe)."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


def assert_setting_detected(meta: dict, tensors: dict, tmp_path, flag: str, value: str, changed: str,
                            expected: dict | None = None) -> None:
    """The comparison can fail: with `flag value` instead of the official setting, clzoo's run leaves the
    fixture's tolerance where `changed` (a regex over the mismatch message: a step's loss or a tensor's name)
    says. `expected`: the tensors compared (default the fixture's own)."""
    import pytest

    losses, state = clzoo_steps({**meta, "argv": with_setting(meta["argv"], flag, value)}, tensors, tmp_path)
    with pytest.raises(AssertionError, match=changed):
        assert_matches(meta, tensors if expected is None else expected, losses, state)
