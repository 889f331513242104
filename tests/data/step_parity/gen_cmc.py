"""Writes cmc.safetensors + cmc.json: 3 optimizer steps of the official CMC trainer (HobbitLong/CMC
train_CMC.py `train` with NCE/NCEAverage.py `NCEAverage` (two memory banks, one noise draw for both
directions, Z_l and Z_ab fixed from the first batch, the momentum update of both banks), NCE/NCECriterion.py
`NCECriterion` x 2, models/resnet.py `ResNetV1('resnet18')` (L and ab ResNet-18s at width 0.5, fc -> 128,
Normalize(2)), set_optimizer's SGD, util.py's adjust_learning_rate), in the format of
tests/training/step_parity.py.

    git --git-dir=MIRROR archive COMMIT | tar -x -C /tmp/cmc_src
    pip install --target /tmp/skim scikit-image        # dataset.py's RGB2Lab (skimage.color.rgb2lab)
    python -c 'import sys, runpy; sys.path.append("/tmp/skim"); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")' \
        tests/data/step_parity/gen_cmc.py /tmp/cmc_src COMMIT [float64|float32] [OUT_DIR]

Nothing of the official code lives in this repository. Its files are executed as they are, except two lines of
train_CMC.py (see `load_official`): `index.cuda(async=True)` (`async` is a keyword since Python 3.7) and
`inputs = inputs.float()` (which would cast a float64 fixture's batch to float32; in a float32 run it is the
same line). `tensorboard_logger` gets a stub module (only main() logs). torch.Tensor.cuda, nn.Module.cuda and
torch.cuda.synchronize are identities on this CPU machine.

The batches are what get_train_loader's transform makes of random uint8 images after its crop and flip:
dataset.py `RGB2Lab` (skimage), ToTensor, Normalize with get_train_loader's Lab mean and std. clzoo's views are
the same images as RGB in [0, 1] normalised with ImageNet's mean and std (what the trainer feeds), which
clzoo's CMCResNet converts to the same normalised Lab itself. models/resnet.py's ResNets pool with
AvgPool2d(7) (224 px only): each branch's `avgpool` attribute is replaced by AdaptiveAvgPool2d(1), the same
operation at 224 px. 32 images of 32 px, batch 8, K = 16, T 0.07, m 0.5, lr 0.03 (epoch 1 of 240), wd 1e-4.

The noise indices: NCEAverage draws them from AliasMethod over a uniform distribution; its `draw` is given
clzoo's counter-based draw for (seed, 2, step, 0) per sample (training/modules/memory_bank.py `sample`).
float64 by default: at T 0.07 with exp(s / T) / Z, float32 rounding of two summation orders alone moves the
losses by ~1e-5 (as for InstDisc).
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

from gen_instdisc import exec_patched
from recording import clzoo_noise_draw, cuda_as_identity, detached, generator_args, loss_recording_meter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
N, BATCH, SIZE, STEPS, EPOCHS = 32, 8, 32, 3, 240
K, T, M, FEAT_DIM, LR, WD = 16, 0.07, 0.5, 128, 0.03, 1e-4
CHANNELS = [32, 64, 128, 256]  # ResNet-18 at width 0.5: models/resnet.py base = int(64 * 0.5); the stem stays 64
SEED = 0
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def clzoo_argv() -> list:
    return ["--method", "cmc", "--model", "resnet18", "--model-args.channels", json.dumps(CHANNELS),
            "--image-size", str(SIZE), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--lr", repr(LR), "--lr-scaling", "none", "--weight-decay", repr(WD), "--mixed-precision", "no",
            "--channels-last", "false", "--hparams.K", str(K), "--hparams.tau", repr(T), "--hparams.m", repr(M),
            "--hparams.dim", str(FEAT_DIM), "--hparams.loss", "nce"]


def load_official(src: str):
    sys.modules["tensorboard_logger"] = types.SimpleNamespace(Logger=None)
    return exec_patched(os.path.join(src, "train_CMC.py"), "train_CMC", "async=True", "non_blocking=True",
                        more=(("inputs = inputs.float()", "inputs = inputs.to(torch.get_default_dtype())"),))


def clzoo_state(model, contrast) -> dict:
    """ResNetV1's branches -> the CMCResNet backbone (fc -> projectors.<view>.0); NCEAverage's memory_l /
    memory_ab -> banks.0 / banks.1, its Z_l (params[2], anchor L against the ab bank) -> Z[0, 1] and Z_ab
    (params[3]) -> Z[1, 0]."""
    out = {}
    for v, branch in enumerate(("l_to_ab", "ab_to_l")):
        for k, t in getattr(model, branch).state_dict().items():
            out[f"projectors.{v}.0.{k[3:]}" if k.startswith("fc.") else f"backbone.{branch}.{k}"] = t
    out["banks.0.bank"], out["banks.1.bank"] = contrast.memory_l, contrast.memory_ab
    Z = torch.full((2, 2), -1.0, dtype=contrast.params.dtype)
    Z[0, 1], Z[1, 0] = contrast.params[2], contrast.params[3]
    out["Z"] = Z
    return detached(out)


def main():
    src, commit, dtype_name, out_dir, dtype = generator_args()
    torch.set_default_dtype(dtype)  # NCEAverage's memory and params buffers
    sys.path.insert(0, src)
    sys.path.insert(1, REPO)
    cuda_as_identity()
    cmc = load_official(src)
    from torchvision import transforms

    from dataset import RGB2Lab
    from models.resnet import ResNetV1
    from NCE.NCEAverage import NCEAverage
    from NCE.NCECriterion import NCECriterion


    torch.set_num_threads(1)
    args = types.SimpleNamespace(learning_rate=LR, lr_decay_epochs=[120, 160, 200], lr_decay_rate=0.1,
                                 momentum=0.9, weight_decay=WD, nce_k=K, nce_t=T, nce_m=M, feat_dim=FEAT_DIM,
                                 softmax=False, amp=False, print_freq=1000000)
    torch.manual_seed(SEED)
    model = ResNetV1("resnet18").to(dtype)  # MyResNetsCMC('resnet18v1') without its nn.DataParallel wrapper
    for branch in (model.l_to_ab, model.ab_to_l):
        branch.avgpool = nn.AdaptiveAvgPool2d(1)
    # set_model(): NCEAverage(feat_dim, n_data, nce_k, nce_t, nce_m, softmax), NCECriterion(n_data) x 2
    contrast = NCEAverage(args.feat_dim, N, args.nce_k, args.nce_t, args.nce_m, args.softmax)
    criterion_l, criterion_ab = NCECriterion(N), NCECriterion(N)
    optimizer = cmc.set_optimizer(args, model)
    init = clzoo_state(model, contrast)

    # get_train_loader: RGB2Lab, ToTensor, Normalize(Lab midpoints, half-ranges) after the crop and flip
    mean = [(0 + 100) / 2, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2]
    std = [(100 - 0) / 2, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2]
    lab_transform = transforms.Compose([RGB2Lab(), transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])
    rng = np.random.default_rng(1234)
    images = [rng.integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8) for _ in range(STEPS)]
    batches = [(torch.stack([lab_transform(im) for im in imgs]).to(dtype), None,
                torch.arange(s * BATCH, (s + 1) * BATCH)) for s, imgs in enumerate(images)]
    rgb_views = [((torch.from_numpy(imgs).permute(0, 3, 1, 2).to(dtype) / 255
                   - torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1))
                  / torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1)) for imgs in images]
    contrast.multinomial.draw = clzoo_noise_draw([b[2] for b in batches], K, N, SEED)
    losses = []

    cmc.AverageMeter = loss_recording_meter(cmc.AverageMeter, losses, position=2)  # after it: l_loss, ab_loss ...
    cmc.adjust_learning_rate(1, args, optimizer)
    cmc.train(1, batches, model, contrast, criterion_l, criterion_ab, optimizer, args)
    assert len(losses) == STEPS, losses
    final = clzoo_state(model, contrast)

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, ((_, _, index), rgb) in enumerate(zip(batches, rgb_views)):
        tensors[f"views/{s}/0"] = rgb.contiguous()
        tensors[f"index/{s}"] = index.clone()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, "cmc.safetensors"))
    meta = {
        "argv": clzoo_argv(),
        "losses": losses,
        "total_steps": EPOCHS * N // BATCH,
        "steps_per_epoch": N // BATCH,
        "num_samples": N,
        "repo": "HobbitLong/CMC",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["train_CMC.py (train, set_optimizer)", "NCE/NCEAverage.py", "NCE/NCECriterion.py",
                      "NCE/alias_multinomial.py", "models/resnet.py (ResNetV1, resnet18, Normalize)",
                      "dataset.py (RGB2Lab)", "util.py (adjust_learning_rate, AverageMeter)"],
            "model": "models.resnet.ResNetV1('resnet18'): L and ab ResNet-18s at width 0.5 (stem 64), fc -> 128, "
                     "Normalize(2); each branch's avgpool = AdaptiveAvgPool2d(1) (AvgPool2d(7) needs 224 px)",
            "args": vars(args),
            "loop": "train_CMC.adjust_learning_rate(1, args, optimizer); train_CMC.train(1, 3 batches of (Lab "
                    "inputs, _, index), model, NCEAverage, NCECriterion, NCECriterion, SGD, args), as main() calls them",
            "patched": "train_CMC.py read and executed with `async=True` as `non_blocking=True` and `inputs = "
                       "inputs.float()` as `inputs.to(torch.get_default_dtype())`; a stub tensorboard_logger; "
                       "torch.Tensor.cuda / nn.Module.cuda / torch.cuda.synchronize = identity; "
                       "NCEAverage.multinomial.draw = clzoo's counter-based noise indices; AverageMeter subclassed "
                       "to record each step's loss; torch default dtype float64 for a float64 fixture",
            "keys": "l_to_ab / ab_to_l -> backbone.l_to_ab / ab_to_l (fc -> projectors.0 / 1), memory_l / memory_ab "
                    "-> banks.0 / 1, params[2] / params[3] -> Z[0, 1] / Z[1, 0]",
            "views": "numpy default_rng(1234) uint8 images (8, 32, 32, 3) per step; the official batch: RGB2Lab + "
                     "ToTensor + Normalize of get_train_loader; views/<step>/0: the same images / 255, normalised "
                     "with ImageNet's mean and std; index/<step> = 8 s .. 8 s + 7",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, "cmc.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "Z_l": float(final["Z"][0, 1]), "Z_ab": float(final["Z"][1, 0]),
                      "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
