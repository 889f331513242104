"""Writes instdisc.safetensors + instdisc.json: 3 optimizer steps of the official InstDisc trainer
(zhirongw/lemniscate.pytorch main.py `train` with lib/NCEAverage.py `NCEAverage` (memory bank, noise
sampling, Z estimated at the first forward, the momentum update of the bank in its backward),
lib/NCECriterion.py `NCECriterion`, lib/normalize.py `Normalize`, main()'s SGD), in the format of
tests/training/step_parity.py.

    git --git-dir=MIRROR archive COMMIT | tar -x -C /tmp/lem_src
    python tests/data/step_parity/gen_instdisc.py /tmp/lem_src COMMIT [float64|float32] [OUT_DIR]

Nothing of the official code lives in this repository. Two lines of it do not run on today's Python and
PyTorch, so those two files are read and executed with one line each changed (see `load_official`):
main.py:220 `index.cuda(async=True)` (`async` is a keyword since Python 3.7) and lib/NCEAverage.py:56
`gradOutput.data.resize_(...)` (a resize of a temporary alias since PyTorch 0.4; the bmm after it fails).
`from test import NN, kNN` (test.py has the same `async=True`; its kNN evaluation is not part of a training
step) gets a stub module. Run in the project venv, on CPU.

main.py's ImageNet ResNets end in AvgPool2d(7) (224 px only), so the network is the narrow torchvision
ResNet-18 of narrow_resnet.py with fc -> low_dim 128, followed by lemniscate's `Normalize(2)`, as
models/resnet.py's forward ends (fc, l2norm). 32 images, batch 8, K = 16 noise samples, T 0.07, m 0.5,
lr 0.03 (epoch 0 of main()'s 120 / 160 step schedule), wd 1e-4.

The noise indices: NCEAverage draws them from AliasMethod over a uniform distribution; its `draw` is given
clzoo's counter-based draw for (seed, 2, step, 0) per sample (training/modules/memory_bank.py `sample`), the
one random draw two implementations cannot otherwise share. float64 (the default; `float32` writes the
other): at T 0.07 with exp(s / T) / Z, clzoo against this script's float32 run differs by 5.9e-5 (losses) and
3.9e-5 (tensors), float32 rounding of the two summation orders; against the float64 run by 2e-13.
"""

from __future__ import annotations

import json
import os
import sys
import types

import torch
import torch.nn as nn
from safetensors.torch import save_file

from recording import clzoo_noise_draw, cuda_as_identity, detached, generator_args, loss_recording_meter

from narrow_resnet import CHANNELS, NarrowResNet18

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
N, BATCH, SIZE, STEPS, EPOCHS = 32, 8, 32, 3, 200
K, T, M, LOW_DIM, LR, WD = 16, 0.07, 0.5, 128, 0.03, 1e-4
SEED = 0


def clzoo_argv() -> list:
    return ["--method", "instdisc", "--model", "resnet18", "--model-args.channels", json.dumps(CHANNELS),
            "--image-size", str(SIZE), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--lr", repr(LR), "--lr-scaling", "none", "--weight-decay", repr(WD), "--mixed-precision", "no",
            "--channels-last", "false", "--hparams.K", str(K), "--hparams.tau", repr(T), "--hparams.m", repr(M),
            "--hparams.dim", str(LOW_DIM), "--hparams.loss", "nce"]


def exec_patched(path: str, name: str, old: str, new: str, package: str | None = None, more: tuple = ()):
    """The official file at `path`, executed as module `name` with its one occurrence of `old` as `new` (and of
    each further (old, new) pair in `more`)."""
    with open(path) as f:
        code = f.read()
    for o, n in ((old, new), *more):
        assert code.count(o) == 1, f"expected one {o!r} in {path}"
        code = code.replace(o, n)
    module = types.ModuleType(name)
    module.__file__, module.__package__ = path, package
    sys.modules[name] = module
    exec(compile(code, path, "exec"), module.__dict__)
    return module


def load_official(src: str):
    """main.py with main.py:220's `async=True` keyword (a SyntaxError since Python 3.7) as
    `non_blocking=True`; lib/NCEAverage.py with NCEFunction.backward's `gradOutput.data.resize_(batchSize, 1,
    K+1)` (NCEAverage.py:56; since PyTorch 0.4 `.data` is a new alias each time, so the resize is lost and
    the bmm of line 59 fails) assigned back to gradOutput, which line 59 then reads as intended."""
    import lib  # noqa: F401  (the package of the relative import in NCEAverage.py)
    exec_patched(os.path.join(src, "lib", "NCEAverage.py"), "lib.NCEAverage",
                 "        gradOutput.data.resize_(batchSize, 1, K+1)",
                 "        gradOutput = gradOutput.data.resize_(batchSize, 1, K+1)", package="lib")
    sys.modules["test"] = types.SimpleNamespace(NN=None, kNN=None)  # test.py: evaluation only, same keyword
    return exec_patched(os.path.join(src, "main.py"), "lemniscate_main", "async=True", "non_blocking=True")


def clzoo_state(model, lemniscate) -> dict:
    """torchvision's names -> clzoo InstDisc's: fc -> projector.0, the rest -> backbone.*; NCEAverage's
    memory -> bank.bank, its Z (params[2]) -> Z."""
    out = {}
    for k, v in model[0].state_dict().items():
        out[("projector.0." + k[3:]) if k.startswith("fc.") else "backbone." + k] = v
    out["bank.bank"] = lemniscate.memory
    out["Z"] = lemniscate.params[2].clone()
    return detached(out)


def main():
    src, commit, dtype_name, out_dir, dtype = generator_args()
    torch.set_default_dtype(dtype)  # NCEAverage's memory and params buffers
    sys.path.insert(0, src)
    sys.path.insert(1, REPO)
    cuda_as_identity()  # (torch.cuda.synchronize too)
    lem = load_official(src)
    from lib.normalize import Normalize
    from lib.NCEAverage import NCEAverage
    from lib.NCECriterion import NCECriterion


    torch.set_num_threads(1)
    lem.args = lem.parser.parse_args(["--lr", str(LR), "--wd", str(WD), "--low-dim", str(LOW_DIM),
                                      "--nce-k", str(K), "--nce-t", str(T), "--nce-m", str(M), "--epochs",
                                      str(EPOCHS), "--print-freq", "1000000", "/unused"])
    args = lem.args
    torch.manual_seed(SEED)
    model = nn.Sequential(NarrowResNet18(num_classes=args.low_dim), Normalize(2)).to(dtype)
    # main(): NCEAverage(low_dim, ndata, nce_k, nce_t, nce_m), NCECriterion(ndata), SGD
    lemniscate = NCEAverage(args.low_dim, N, args.nce_k, args.nce_t, args.nce_m)
    criterion = NCECriterion(N)
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    init = clzoo_state(model, lemniscate)

    gen = torch.Generator().manual_seed(1234)
    batches = [(torch.randn(BATCH, 3, SIZE, SIZE, generator=gen).to(dtype), None,
                torch.arange(s * BATCH, (s + 1) * BATCH)) for s in range(STEPS)]
    lemniscate.multinomial.draw = clzoo_noise_draw([b[2] for b in batches], K, N, SEED)
    losses = []

    lem.AverageMeter = loss_recording_meter(lem.AverageMeter, losses)
    lem.adjust_learning_rate(optimizer, 0)
    lem.train(batches, model, lemniscate, criterion, optimizer, 0)
    assert len(losses) == STEPS, losses
    final = clzoo_state(model, lemniscate)

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, (x, _, index) in enumerate(batches):
        tensors[f"views/{s}/0"] = x.contiguous()
        tensors[f"index/{s}"] = index.clone()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, "instdisc.safetensors"))
    meta = {
        "argv": clzoo_argv(),
        "losses": losses,
        "total_steps": EPOCHS * N // BATCH,
        "steps_per_epoch": N // BATCH,
        "num_samples": N,
        "repo": "zhirongw/lemniscate.pytorch",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["main.py (train, adjust_learning_rate, parser)", "lib/NCEAverage.py", "lib/NCECriterion.py",
                      "lib/normalize.py", "lib/utils.py (AverageMeter)"],
            "model": f"nn.Sequential(torchvision ResNet-18 with stage widths {CHANNELS}, fc -> {LOW_DIM}; "
                     "lib.normalize.Normalize(2)) (main.py's ImageNet ResNets pool with AvgPool2d(7): 224 px only)",
            "args": {k: v for k, v in vars(args).items() if k not in ("data", "dist_url")},
            "loop": "main.adjust_learning_rate(optimizer, 0); main.train(3 batches of (input, _, index), model, "
                    "NCEAverage, NCECriterion, SGD, epoch 0), as main() calls them",
            "patched": "main.py read and executed with its one `async=True` as `non_blocking=True` (SyntaxError "
                       "since Python 3.7); lib/NCEAverage.py with line 56 `gradOutput.data.resize_(batchSize, 1, "
                       "K+1)` as `gradOutput = gradOutput.data.resize_(...)` (the resize of a temporary .data "
                       "alias is lost since PyTorch 0.4); a stub `test` module (NN / kNN evaluation); torch.Tensor.cuda / "
                       "nn.Module.cuda = identity; NCEAverage.multinomial.draw = clzoo's counter-based noise "
                       "indices; AverageMeter subclassed to record each step's loss; torch default dtype "
                       "float64 for a float64 fixture",
            "keys": "fc -> projector.0, the ResNet -> backbone.*, NCEAverage.memory -> bank.bank, params[2] -> Z",
            "views": "torch.randn(8, 3, 32, 32), Generator seed 1234, one view per step; index/<step> = "
                     "8 s .. 8 s + 7",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, "instdisc.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "Z": float(final["Z"]), "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
