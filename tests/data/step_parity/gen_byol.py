"""Writes byol.safetensors + byol.json: 3 optimizer steps of the official BYOL trainer
(google-deepmind/deepmind-research byol/: byol_experiment.py `ByolExperiment` (`step` -> `_update_fn` ->
`loss_fn`, `_make_initial_state`), utils/networks.py `ResNetTorso` / `MLP`, utils/optimizers.py `lars` with
`exclude_bias_and_norm`, utils/schedules.py `learning_schedule` / `target_ema`, utils/helpers.py
`regression_loss`), in the format of tests/training/step_parity.py.

    git --git-dir=MIRROR archive COMMIT byol | tar -x -C /tmp/byol_src
    /tmp/byol_venv/bin/python tests/data/step_parity/gen_byol.py /tmp/byol_src COMMIT [float32|float64] [OUT_DIR]

argv[1] is the folder that holds the extracted `byol/` package (it is imported as `byol.*`, as main_loop.py
imports it); nothing of it lives in this repository. This runs in a scratch venv OUTSIDE the project (JAX,
not torch): jax/jaxlib 0.4.34, dm-haiku 0.0.13, optax 0.2.5, numpy 1.26.4, dm-tree, dill, safetensors;
CPU, one device (the official `jax.pmap(..., axis_name='i')` and the cross-replica BN run over it).

The network: `ResNetTorso` with the smallest bottleneck layout (blocks_per_group (1, 1, 1, 1),
channels_per_group (32, 64, 128, 256), ResNet v1, width 1: the ResNet-50 block at 1/8 width, one block per
group), projector 32-16, predictor 32-16, at 32 px, batch 8. clzoo's counterpart is `byol_resnet50` (Haiku
'SAME' padding on the strided convs and the max-pool) with --model-args.layers [1, 1, 1, 1] and
--model-args.channels [8, 16, 32, 64] (timm's bottleneck planes: out = 4 x planes).

The loop is main_loop.py `train_loop`'s (rng split per step, global_step broadcast to the device count,
`experiment.step`), stopped after 3 steps of max_steps 8 (warmup 2 steps: lr 0, lr/2, then the cosine).
`experiment.step` draws its batches from `_build_train_input` (patched: the fixture's batches instead of the
ImageNet tf.data pipeline); its first `next()` is the dummy input of `_make_initial_state` (the first batch).

The fixture is float32: clzoo matches it to 2.4e-6 (loss) / 1.3e-6 (tensors), and the official run is
bit-identical with XLA on one thread. `float64` (jax_enable_x64; Haiku then creates float64 parameters) gives
a fixture clzoo matches to ~2e-9, the rest being the official lr's float32 rounding (schedules.py casts
global_step to float32).
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, SIZE, STEPS, EPOCHS, ITERS, WARMUP_EPOCHS = 8, 32, 3, 4, 2, 1
MAX_STEPS, WARMUP_STEPS = EPOCHS * ITERS, WARMUP_EPOCHS * ITERS
BASE_LR, WD, ETA, MOMENTUM, TAU_BASE = 6.4, 1e-3, 1e-3, 0.9, 0.99
PROJ_HIDDEN, PROJ_OUT, PRED_HIDDEN, NUM_CLASSES = 32, 16, 32, 10
ENCODER = dict(blocks_per_group=(1, 1, 1, 1), channels_per_group=(32, 64, 128, 256), bottleneck=True,
               resnet_v2=False, width_multiplier=1)
CLZOO_CHANNELS = [c // 4 for c in ENCODER["channels_per_group"]]
SEED = 0


def clzoo_argv() -> list:
    return ["--method", "byol", "--model", "byol_resnet50",
            "--model-args.layers", json.dumps(list(ENCODER["blocks_per_group"])),
            "--model-args.channels", json.dumps(CLZOO_CHANNELS),
            "--image-size", str(SIZE), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--optimizer", "lars", "--lr", str(BASE_LR), "--lr-scaling", "linear", "--lr-schedule", "cosine",
            "--min-lr", "0", "--warmup-epochs", str(WARMUP_EPOCHS), "--weight-decay", str(WD),
            "--weight-decay-end", str(WD), "--momentum", str(MOMENTUM), "--lars-eta", str(ETA),
            "--sync-bn", "false", "--mixed-precision", "no", "--channels-last", "false",
            "--hparams.tau_base", str(TAU_BASE), "--hparams.hidden_dim", str(PROJ_HIDDEN),
            "--hparams.dim", str(PROJ_OUT)]


class _Anything(types.ModuleType):
    """A stand-in module: every attribute is a dummy class (dataset.py's annotations tf.Tensor, tfds.Split)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


def _stub_imports() -> None:
    # byol_experiment.py imports acme.jax.utils (prefetch of the train iterator) and utils/dataset.py imports
    # tensorflow / tensorflow_datasets (the ImageNet pipeline): neither is used on the fixture's batches.
    acme, acme_jax, acme_utils = (types.ModuleType(n) for n in ("acme", "acme.jax", "acme.jax.utils"))
    acme_utils.prefetch = lambda iterable, *a, **k: iter(iterable)
    acme.jax, acme_jax.utils = acme_jax, acme_utils
    sys.modules.update({"acme": acme, "acme.jax": acme_jax, "acme.jax.utils": acme_utils})
    tf, compat, tfds = _Anything("tensorflow"), _Anything("tensorflow.compat"), _Anything("tensorflow_datasets")
    tf_v2 = _Anything("tensorflow.compat.v2")
    tf.compat, compat.v2 = compat, tf_v2
    sys.modules.update({"tensorflow": tf, "tensorflow.compat": compat, "tensorflow.compat.v2": tf_v2,
                        "tensorflow_datasets": tfds})


# ---- Haiku names -> clzoo's BYOL state_dict names (training/methods/byol.py; the torso as
# clzoo/convert/byol.py `byol_haiku_to_timm` maps it, the MLPs as `haiku_mlp_state_dict`) ----

def _torso_name(module: str) -> str | None:
    parts = module.split("/~/")
    if parts[0] != "res_net_torso":
        return None
    if parts[1:] == ["initial_conv"]:
        return "conv1"
    if parts[1:] == ["initial_batchnorm"]:
        return "bn1"
    group, block, layer = parts[1:]
    g, b = int(group.rsplit("_", 1)[1]), int(block.rsplit("_", 1)[1])
    sub = {"shortcut_conv": "downsample.0", "shortcut_batchnorm": "downsample.1"}.get(layer)
    if sub is None:
        kind, k = layer.rsplit("_", 1)
        sub = {"conv": "conv", "batchnorm": "bn"}[kind] + str(int(k) + 1)
    return f"layer{g + 1}.{b}.{sub}"


def _mlp_name(module: str) -> str | None:
    parts = module.split("/")  # networks.MLP builds its layers in __call__: projector/linear, not /~/
    if parts[0] not in ("projector", "predictor") or len(parts) != 2:
        return None
    return f"{parts[0]}." + {"linear": "0", "batch_norm": "1", "linear_1": "3"}[parts[1]]


def clzoo_module(module: str) -> str | None:
    """clzoo's module for a Haiku module path; None for the online classifier (not part of clzoo's BYOL)."""
    return _mlp_name(module) or (None if (t := _torso_name(module)) is None else f"backbone.{t}")


def clzoo_params(params, prefix: str, with_predictor: bool) -> dict:
    out = {}
    for module, leaves in params.items():
        name = clzoo_module(module)
        if name is None or (not with_predictor and name.startswith("predictor.")):
            continue
        if not name.startswith("predictor."):
            name = prefix + name
        for leaf, v in leaves.items():
            v = np.asarray(v)
            if leaf == "w":
                out[f"{name}.weight"] = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T  # HWIO -> OIHW, (in, out)
            elif leaf == "b":
                out[f"{name}.bias"] = v
            else:  # BatchNorm scale / offset, shape (1, ..., 1, C)
                out[f"{name}.{'weight' if leaf == 'scale' else 'bias'}"] = v.reshape(-1)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def bn_buffers(params, prefix: str, with_predictor: bool, dtype) -> dict:
    """PyTorch's initial BN buffers (running_mean 0, running_var 1, num_batches_tracked 0) for init/: Haiku's
    moving averages (zero-debiased EMAs, state, not parameters) do not take part in a training step."""
    out = {}
    for k, v in clzoo_params(params, prefix, with_predictor).items():
        base = k.rsplit(".", 1)[0]
        if k.endswith(".bias") and (".bn" in base or base.endswith(("downsample.1", "projector.1", "predictor.1"))):
            out[f"{base}.running_mean"] = np.zeros(v.shape, dtype)
            out[f"{base}.running_var"] = np.ones(v.shape, dtype)
            out[f"{base}.num_batches_tracked"] = np.zeros((), np.int64)
    return out


def haiku_bn_state(state, prefix: str, with_predictor: bool) -> dict:
    """The official BN state after the last step, under clzoo's module names: haiku_state/<module>.<ema>.<leaf>
    with ema mean_ema / var_ema and leaf hidden / average (average = hidden / (1 - decay^counter))."""
    out = {}
    for module, leaves in state.items():
        bn, ema = module.rsplit("/~/", 1)
        name = clzoo_module(bn)
        if name is None or (not with_predictor and name.startswith("predictor.")):
            continue
        if not name.startswith("predictor."):
            name = prefix + name
        for leaf in ("hidden", "average"):
            out[f"haiku_state/{name}.{ema}.{leaf}"] = np.ascontiguousarray(np.asarray(leaves[leaf]).reshape(-1))
    return out


def main():
    src, commit = os.path.abspath(sys.argv[1]), sys.argv[2]
    dtype_name = sys.argv[3] if len(sys.argv) > 3 else "float32"
    out_dir = sys.argv[4] if len(sys.argv) > 4 else HERE
    import jax
    if dtype_name == "float64":
        jax.config.update("jax_enable_x64", True)  # Haiku creates every parameter in its input's dtype
    dtype = np.dtype(dtype_name)
    _stub_imports()
    sys.path.insert(0, src)
    from byol import byol_experiment
    from byol.utils import augmentations, dataset, helpers
    from safetensors.numpy import save_file

    # the fixture feeds the two views as loss_fn's network receives them: no random flip / colour / blur /
    # solarize (augmentations.postprocess), the views are the fixture's own
    augmentations.postprocess = lambda inputs, rng: dict(view1=inputs["view1"], view2=inputs["view2"],
                                                         labels=inputs["labels"])
    bn_config = {"decay_rate": .9, "eps": 1e-5, "cross_replica_axis": "i", "create_scale": True,
                 "create_offset": True}  # configs/byol.py
    config = dict(
        random_seed=SEED, num_classes=NUM_CLASSES, batch_size=BATCH, max_steps=MAX_STEPS,
        enable_double_transpose=True, base_target_ema=TAU_BASE,
        network_config=dict(projector_hidden_size=PROJ_HIDDEN, projector_output_size=PROJ_OUT,
                            predictor_hidden_size=PRED_HIDDEN, encoder_class="ResNetTorso",
                            encoder_config=dict(ENCODER), bn_config=bn_config),
        optimizer_config=dict(weight_decay=WD, eta=ETA, momentum=MOMENTUM),
        lr_schedule_config=dict(base_learning_rate=BASE_LR, warmup_steps=WARMUP_STEPS),
        evaluation_config=dict(subset="test", batch_size=BATCH),
        checkpointing_config=dict(use_checkpointing=False, checkpoint_dir=None, save_checkpoint_interval=0,
                                  filename="pretrain.pkl"))
    experiment = byol_experiment.ByolExperiment(**config)

    rs = np.random.RandomState(1234)
    raw = [[rs.uniform(0.0, 1.0, (BATCH, SIZE, SIZE, 3)).astype(dtype) for _ in range(2)] for _ in range(STEPS)]
    labels = (np.arange(BATCH) % NUM_CLASSES).astype(np.int32)
    n_dev = jax.local_device_count()
    assert n_dev == 1, n_dev
    batches = [dict(view1=v1[None], view2=v2[None], labels=labels[None]) for v1, v2 in raw]
    # _initialize_train's first next() is _make_initial_state's dummy input, then one batch per step
    experiment._build_train_input = lambda: iter([batches[0], *batches])

    logs = []
    rng = jax.random.PRNGKey(0)  # main_loop.py train_loop
    for step in range(STEPS):
        step_rng, rng = tuple(jax.random.split(rng))
        step_rng_device = jax.random.split(step_rng, num=jax.device_count())[:n_dev]
        step_device = np.broadcast_to(step, [n_dev])
        if step == 0:
            experiment._initialize_train()
            init_state = helpers.get_first(experiment._byol_state)
        scalars = experiment.step(global_step=step_device, rng=step_rng_device)
        logs.append({k: float(v) for k, v in jax.device_get(scalars).items()})
    final_state = helpers.get_first(experiment._byol_state)

    def clzoo_state(s, buffers: bool) -> dict:
        out = {**clzoo_params(s.online_params, "", True), **clzoo_params(s.target_params, "target_", False)}
        if buffers:
            out.update(bn_buffers(s.online_params, "", True, dtype))
            out.update(bn_buffers(s.target_params, "target_", False, dtype))
        return out

    init, final = clzoo_state(init_state, True), clzoo_state(final_state, False)
    tensors = {f"init/{k}": v for k, v in init.items()}
    tensors.update({f"final/{k}": v for k, v in final.items()})
    for s, (v1, v2) in enumerate(raw):  # what the torso receives: dataset.normalize_images, NHWC -> NCHW
        for i, v in enumerate((v1, v2)):
            tensors[f"views/{s}/{i}"] = np.ascontiguousarray(
                np.asarray(dataset.normalize_images(v)).transpose(0, 3, 1, 2))
    tensors.update(haiku_bn_state(final_state.online_state, "", True))
    tensors.update(haiku_bn_state(final_state.target_state, "target_", False))
    assert all(v.dtype in (dtype, np.int64) for v in tensors.values()), {v.dtype for v in tensors.values()}
    save_file(tensors, os.path.join(out_dir, "byol.safetensors"))

    skipped = sorted({m for m in final_state.online_params if clzoo_module(m) is None}
                     | {f"target {m}" for m in final_state.target_params
                        if clzoo_module(m) is None or m.startswith("predictor")})
    import haiku
    import optax
    meta = {
        "argv": clzoo_argv(),
        "losses": [d["repr_loss"] for d in logs],
        "total_steps": MAX_STEPS,
        "steps_per_epoch": ITERS,
        "num_samples": BATCH * ITERS,
        "repo": "google-deepmind/deepmind-research",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["byol/byol_experiment.py", "byol/utils/networks.py", "byol/utils/optimizers.py",
                      "byol/utils/schedules.py", "byol/utils/helpers.py", "byol/utils/dataset.py",
                      "byol/main_loop.py (train_loop's rng / global_step per step)"],
            "versions": {"jax": jax.__version__, "dm-haiku": haiku.__version__, "optax": optax.__version__,
                         "numpy": np.__version__, "python": sys.version.split()[0]},
            "config": {k: v for k, v in config.items() if k != "checkpointing_config"},
            "logs_per_step": logs,
            "losses": "logs['repr_loss'] (BYOL's loss, both directions summed); logs['loss'] adds the online "
                      "classifier's cross-entropy on stop_gradient(embedding), which clzoo's method does not "
                      "have: its gradient reaches only the classifier's parameters",
            "loop": f"main_loop.train_loop's per-step rng split and global_step, experiment.step ({STEPS} of "
                    f"max_steps {MAX_STEPS}; warmup_steps {WARMUP_STEPS}): update_pmap(_update_fn) over 1 CPU device",
            "patched": "augmentations.postprocess = identity (the views are the fixture's, no GPU-side "
                       "augmentation); experiment._build_train_input = the fixture's batches (the first one "
                       "also as _make_initial_state's dummy input, as _initialize_train takes it); stub modules "
                       "acme.jax.utils (prefetch = iter), tensorflow.compat.v2 and tensorflow_datasets (the "
                       "ImageNet pipeline, unused); jax_enable_x64 for float64",
            "not_compared": ["the online classifier and the target network's predictor and classifier (not in "
                             "clzoo's BYOL): " + ", ".join(skipped),
                             "BN moving statistics (Haiku state, zero-debiased EMAs; used only at evaluation): "
                             "init/ holds PyTorch's initial buffers, haiku_state/ the official state after the "
                             "last step (tests/training/test_step_parity_byol.py compares what is comparable)"],
            "keys": "res_net_torso/~/initial_conv|initial_batchnorm -> backbone.conv1|bn1; "
                    "block_group_G/~/block_B/~/conv_K|batchnorm_K|shortcut_conv|shortcut_batchnorm -> "
                    "layer{G+1}.B.conv{K+1}|bn{K+1}|downsample.0|downsample.1 (clzoo/convert/byol.py); "
                    "projector|predictor/linear|batch_norm|linear_1 -> .0|.1|.3; target_params -> "
                    "target_backbone.* / target_projector.*; w HWIO -> OIHW, Linear w (in, out) -> (out, in), "
                    "BN scale/offset (1, .., C) -> weight/bias (C,)",
            "views": "numpy RandomState(1234).uniform(0, 1, (8, 32, 32, 3)) per view, [step][0 = view1, "
                     "1 = view2]; saved after dataset.normalize_images (the first op of the official forward), "
                     "NCHW",
            "init_seed": f"random_seed {SEED} (_initialize_train: online and target from split rngs)",
        },
    }
    with open(os.path.join(out_dir, "byol.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": meta["losses"], "lr": [d["learning_rate"] for d in logs],
                      "tau": [d["tau"] for d in logs], "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
