"""Run by test_train_invariance.py: the real trainer (`training/pretrain.py`) on every method with its
recipe's heads, for a few steps, once as a plain single process and once under `accelerate launch
--multi_gpu --num_processes 2` (gloo on CPU), at the same global batch. Each run writes its metrics.jsonl
and model.safetensors under OUT/<name>; the test compares them.

    python train_invariance_worker.py OUT [--float64] [--world W] NAME [NAME ...]

NAME is a key of RUNS, optionally with `+--flag+value` (extra arguments) and `@control` (CONTROLS).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from training import pretrain  # noqa: E402
from training.config import load_config  # noqa: E402

WORLD = 2  # the 2-process run; one process simulates its per-process BN with bn_splits 2
# 32 images, 16 per step, 2 steps per epoch: step 2 opens epoch 1 (DeepCluster-v2's k-means, DINO's teacher
# temperature and last layer, SwAV's prototype freezing end)
COMMON = ["--image-size", "32", "--batch-size", "16", "--max-steps", "3", "--data-args.num_samples", "32",
          "--epochs", "2", "--knn.every", "0", "--mixed-precision", "no", "--log-every", "1", "--save-every", "100",
          "--warmup-epochs", "0"]
HALF_RESNET18 = ["--model", "resnet18", "--model-args.channels", "[32,64,128,256]"]
VIT_TINY = ["--model", "vit_tiny_patch16_224", "--model-args", "{drop_path_rate: 0.2}"]
LOCAL = ["--aug.local_views", "2", "--aug.local_size", "16"]
RUNS = {  # name: (method, arguments); every head and BN as in the recipe, sizes shrunk
    "simclr": ("simclr", HALF_RESNET18),
    "simclrv2": ("simclrv2", HALF_RESNET18),
    "mocov1": ("mocov1", [*HALF_RESNET18, "--hparams.K", "64"]),
    "mocov2": ("mocov2", [*HALF_RESNET18, "--hparams.K", "64"]),
    "infomin": ("infomin", [*HALF_RESNET18, "--hparams.K", "64"]),
    "instdisc": ("instdisc", [*HALF_RESNET18, "--hparams.K", "16"]),
    "pirl": ("pirl", [*HALF_RESNET18, "--hparams.K", "16"]),
    "cmc": ("cmc", [*HALF_RESNET18, "--hparams.K", "16"]),  # L and ab half-width ResNet-18s, 2 banks
    # negatives: every patch of the global batch (BN over an image's patches in v1; GroupNorm in v2)
    "cpc": ("cpc", [*HALF_RESNET18, "--hparams.steps", "3"]),
    "cpcv2": ("cpcv2", [*HALF_RESNET18, "--hparams.steps", "3", "--hparams.directions", "[down,up,right,left]"]),
    "invaspread": ("invaspread", HALF_RESNET18),
    # k-means of the memory after epoch 0 (warmup 1), ProtoNCE from step 2 with the global batch's columns
    "pclv2": ("pclv2", [*HALF_RESNET18, "--hparams.K", "64", "--hparams.num_cluster", "[4,8]",
                        "--hparams.warmup_epochs", "1"]),
    # background partners drawn per sample over the dataset, not from the process's batch
    "simclr_background": ("simclr", [*HALF_RESNET18, "--aug.background", "swap", "--aug.background_p", "0.5"]),
    "byol": ("byol", [*HALF_RESNET18, "--hparams.hidden_dim", "512", "--hparams.dim", "128"]),
    "simsiam": ("simsiam", [*HALF_RESNET18, "--hparams.dim", "512", "--hparams.pred_dim", "128"]),
    # the official gradient is 1/W of the global-batch one (main.py); `invariant` is that of any world size
    "barlowtwins": ("barlowtwins", [*HALF_RESNET18, "--hparams.proj_dims", "[512,512,512]", "--hparams.grad_scale",
                                    "invariant"]),
    "swav": ("swav", [*HALF_RESNET18, *LOCAL, "--hparams.nmb_prototypes", "32", "--hparams.queue_length", "0"]),
    "deepclusterv2": ("deepclusterv2", [*HALF_RESNET18, *LOCAL, "--hparams.nmb_prototypes", "[16,16,16]"]),
    # whole-dataset Sinkhorn labels after the fill epoch, learned prototypes from step 2
    "selav2": ("selav2", [*HALF_RESNET18, *LOCAL, "--hparams.nmb_prototypes", "[16,16,16]"]),
    "mocov3": ("mocov3", [*VIT_TINY, "--hparams.mlp_dim", "256", "--hparams.dim", "64"]),
    "dino": ("dino", [*VIT_TINY, *LOCAL, "--hparams.out_dim", "256", "--hparams.hidden_dim", "128",
                      "--hparams.bottleneck_dim", "64"]),
}


# float32 only: in these runs float32 rounding alone (not the process count) moves the result past 1e-4: the
# float64 runs of 1 and 2 processes agree to 1e-12, float32 ones by 4e-2 (InstDisc: NCE with 16 of 32 bank
# entries as noise, where float32 and float64 runs differ by 0.4 in step 2's loss), 1e-3 (SimCLR v2: LARS
# at 0.1 x sqrt(16) from step 0; two thread counts alone differ by 1e-3) and 3e-4 (InfoMin's jigsaw branch).
FLOAT32_STABLE = {"instdisc": ["--hparams.K", "4"], "simclrv2": ["--lr", "0.01"], "infomin": ["--lr", "0.003"]}
# float64 only: CMC's float32 runs of 1 and 2 processes agree at steps 0-1 (2e-6, 3e-5) and part at step 2, the
# first of epoch 1 (6e-2 with NCE; 3e-3 with softmax; 9e-3 with K 4 and lr 0.003), while its float64 runs agree
# to 3e-13 (2026-12-07): the process count changes nothing but float32 rounding, which this setting amplifies.
# CPC v1 likewise: float32 loss 1.4e-6 but weights 2e-4 apart with its AdamW (Adam's normalised step moves
# weights whose gradient is at rounding level by ~lr either way), and BN running_var 3e-4 / 5e-4 apart with SGD
# at lr 0.03 / 0.003 (BatchNorm over 2 x 2 maps of 8-px patches); float64: 4e-16. CPC v2 (GroupNorm) passes in
# float32.
FLOAT64_ONLY = ("cmc", "cpc")
FLOAT64 = [False]

# Controls, to show that the comparison fails without each fix: NAME@per-process-bn does not simulate the
# 2 processes' BN groups in 1 process; NAME@timm-drop-path keeps timm's DropPath (the process's RNG).
CONTROLS = ("per-process-bn", "timm-drop-path")


def run_args(name: str, world: int, out: str) -> list[str]:
    base, _, control = name.partition("@")
    method, args = RUNS[base.split("+")[0]]
    args = [*args, *base.split("+")[1:]]  # NAME+--flag+value: a variant (for looking into a difference)
    if not FLOAT64[0]:
        args += FLOAT32_STABLE.get(base, [])
    argv = ["--method", method, *COMMON, *args, "--output", os.path.join(out, name)]
    if not load_config(argv)["sync_bn"] and control != "per-process-bn" and "--bn-splits" not in argv:
        argv += ["--bn-splits", str(WORLD // world)]  # one process normalises in the 2 processes' groups
    return argv


def run(name: str, world: int, out: str) -> int:
    convert = pretrain.convert_drop_path
    if name.endswith("@timm-drop-path"):
        pretrain.convert_drop_path = lambda method: method
    try:
        return pretrain.main(run_args(name, world, out))
    finally:
        pretrain.convert_drop_path = convert


def float64_runs() -> None:
    """The same runs in float64 (`--float64`): the method and its views in double, to tell the trainer's
    logic (equal to ~1e-12) from float32 rounding that a run's dynamics amplify."""
    build_views, initial_method = pretrain.build_views, pretrain.initial_method

    def views64(*args, **kw):
        views = build_views(*args, **kw)

        def call(*a, **k):
            batch = views(*a, **k)
            batch["views"] = [v.double() for v in batch["views"]]
            if "jigsaw" in batch:
                batch["jigsaw"] = batch["jigsaw"].double()
            return batch
        return call

    FLOAT64[0] = True
    pretrain.build_views = views64
    pretrain.initial_method = lambda *a, **k: initial_method(*a, **k).double()


def main(out: str, *names: str) -> None:
    if names and names[0] == "--float64":
        float64_runs()
        names = names[1:]
    if names and names[0] == "--world":  # a single-process run that is not a reference for 2 processes
        global WORLD
        WORLD, names = int(names[1]), names[2:]
    from accelerate import Accelerator  # first: it reads ACCELERATE_USE_CPU (a bare PartialState does not)
    state = Accelerator()
    assert state.num_processes in (1, WORLD), state.num_processes
    for name in names:
        rc = run(name, state.num_processes, out)
        assert rc == 0, (name, rc)
    if state.is_main_process:
        with open(os.path.join(out, "world_size"), "w") as f:
            f.write(str(state.num_processes))
    if state.num_processes > 1:  # an orderly gloo shutdown (see train_dist_worker.py)
        state.wait_for_everyone()
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
