"""Writes simclr.safetensors + simclr.json (and simclrv2.*): 3 optimizer steps of the official SimCLR trainer
(google-research/simclr tf2/: model.Model with its ResNet and ProjectionHead, objective.add_contrastive_loss,
model.add_weight_decay, model.WarmUpAndCosineDecay, lars_optimizer.LARSOptimizer via model.build_optimizer;
the body of run.py main's `single_step`), in the format of tests/training/step_parity.py.

    git --git-dir=MIRROR archive COMMIT tf2 | tar -x -C /tmp/simclr_src
    TF_USE_LEGACY_KERAS=1 python tests/data/step_parity/gen_simclr.py /tmp/simclr_src/tf2 COMMIT \
        [simclr|simclrv2] [float32|float64] [OUT_DIR]

Runs in a TensorFlow venv outside the project (tensorflow, tf_keras, absl-py, numpy, safetensors; no torch):
the tf2 modules are imported from argv[1]; nothing of them lives in this repository. TF_USE_LEGACY_KERAS=1:
the code is written for Keras 2 (`tf.keras.optimizers.legacy.Optimizer`, `tf.keras.experimental.CosineDecay`).

What is set instead of run.py's flag defaults, and why:
- the network: `resnet_depth 50` with `width_multiplier 0.125` (Keras casts the filters to int: stem 8, stages
  8-16-32-64, 256 features), the smallest ResNet-50 the code builds; clzoo's side is `simclr_resnet50` (the
  converted SimCLR architecture, TF 'SAME' stem max-pool) with `channels [8, 16, 32, 64]`, `stem_width 8`.
  64 px, not 32: at image_size <= 32 the official code switches to its CIFAR stem (3x3 stride 1, no max-pool),
  which clzoo's trainer does not build (README). ResNet-18 is not used: its first block group has a
  projection shortcut even where the widths match, which no timm ResNet-18 has.
- `use_blur False`: the official model blurs half the batch inside its forward (data_util.batch_random_blur);
  blur is a view augmentation, clzoo's is in its pipeline. The fixture's views are given.
- `lineareval_while_pretraining False`: the online linear head trains on stop_gradient features, with labels
  (none here); its loss and its weight decay reach only its own variables.
- `global_bn False`: one replica, where SyncBatchNormalization computes BatchNormalization's batch statistics.
- `train_batch_size 8`, 8 examples (1 step per epoch), `train_epochs 10`, `warmup_epochs 2`: the 3 steps are
  global steps 1, 2, 3 (optimizer.iterations starts at 1; step 0's lr is 0): the warmup, its peak, the cosine.
  get_train_steps is `8 x 10 // 8 + 1` = 11 (the official "+ 1": its cosine spans 9 steps, clzoo's 8 for
  10 epochs; the JSON's total_steps is the official 11).
- `learning_rate 9.6` (linear scaling: 0.3 at batch 8; the recipe's 0.3 x 8 / 256 = 0.0094 moves the LARS-
  adapted weights by 1e-5 of their norm per step, under the tolerance) and `weight_decay 1e-4` (so that the
  decay is seen through the trust ratio).
- simclr: `num_proj_layers 2` (SimCLR v1's head); simclrv2: the flag defaults (3 layers), `learning_rate 0.1`
  with `learning_rate_scaling sqrt` (the v2 recipe's lr and scaling: 0.1 x sqrt(8) = 0.28).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, SIZE, STEPS, EPOCHS, WARMUP, FIRST_STEP = 8, 64, 3, 10, 2, 1
CHANNELS, STEM = [8, 16, 32, 64], 8
WD, TAU, PROJ_DIM = 1e-4, 0.1, 128
VARIANTS = {
    "simclr": dict(num_proj_layers=2, learning_rate=9.6, learning_rate_scaling="linear"),
    "simclrv2": dict(num_proj_layers=3, learning_rate=0.1, learning_rate_scaling="sqrt"),
}
VIEW_SEED, NOISE = 1234, 0.5


def clzoo_argv(method: str) -> list:
    v = VARIANTS[method]
    return ["--method", method, "--model", "simclr_resnet50", "--model-args.channels", json.dumps(CHANNELS),
            "--model-args.stem_width", str(STEM), "--image-size", str(SIZE), "--batch-size", str(BATCH),
            "--epochs", str(EPOCHS), "--warmup-epochs", str(WARMUP), "--seed", "0",
            "--lr", str(v["learning_rate"]), "--lr-scaling", v["learning_rate_scaling"],
            "--weight-decay", str(WD), "--mixed-precision", "no", "--channels-last", "false",
            "--hparams.proj_layers", str(v["num_proj_layers"]), "--hparams.proj_dim", str(PROJ_DIM),
            "--hparams.tau", str(TAU)]


def conv(layer) -> dict:
    """A Conv2dFixedPadding's kernel, HWIO -> OIHW."""
    return {"weight": layer.conv2d.kernel.numpy().transpose(3, 2, 0, 1)}


def batch_norm(layer, steps: int) -> dict:
    """A BatchNormRelu's BatchNormalization as nn.BatchNorm's keys. `running_var` is Keras's moving variance
    (of the *biased* batch variance; the test converts it, see test_step_parity_simclr.py); with center=False
    (the head's last BN) the bias is clzoo's frozen zero."""
    bn = layer.bn
    out = {"weight": bn.gamma.numpy(),
           "bias": bn.beta.numpy() if bn.center else np.zeros_like(bn.gamma.numpy()),
           "running_mean": bn.moving_mean.numpy(), "running_var": bn.moving_variance.numpy(),
           "num_batches_tracked": np.array(steps, dtype=np.int64)}
    return out


def clzoo_state(model, steps: int) -> dict:
    """The official variables under clzoo's names (backbone.* = timm ResNet, projector.* = MLPHead: Linear 3j,
    BN 3j + 1), taken from the layer objects (not from TF's auto-numbered variable names)."""
    parts = {}
    stem = model.resnet_model.initial_conv_relu_max_pool
    parts["backbone.conv1"] = conv(stem[0])
    parts["backbone.bn1"] = batch_norm(stem[2], steps)
    for g, group in enumerate(model.resnet_model.block_groups):
        for b, block in enumerate(group.layers):
            prefix = f"backbone.layer{g + 1}.{b}"
            if block.projection_layers:
                parts[f"{prefix}.downsample.0"] = conv(block.projection_layers[0])
                parts[f"{prefix}.downsample.1"] = batch_norm(block.projection_layers[1], steps)
            layers = block.conv_relu_dropblock_layers  # conv, bn, dropblock, conv, bn, dropblock, conv, bn, ...
            for i, (c, n) in enumerate(((0, 1), (3, 4), (6, 7))):
                parts[f"{prefix}.conv{i + 1}"] = conv(layers[c])
                parts[f"{prefix}.bn{i + 1}"] = batch_norm(layers[n], steps)
    for j, linear in enumerate(model._projection_head.linear_layers):
        parts[f"projector.{3 * j}"] = {"weight": linear.dense.kernel.numpy().T}
        parts[f"projector.{3 * j + 1}"] = batch_norm(linear.bn_relu, steps)
    return {f"{m}.{leaf}": np.ascontiguousarray(v) for m, d in parts.items() for leaf, v in d.items()}


def float64_patches(tf_v2, dtype) -> None:
    """For a float64 run (the comparison's float32 rounding check): the tf2 code is float32-only in two
    places, objective.py's `tf.one_hot` labels / masks (TF's default float32) and lars_optimizer.py's trust
    ratio `tf.where(..., 1.0)` (a Python float, converted to float32), and model.py's lr schedule
    `tf.where(step < warmup_steps, ..., cosine_decay(...))` (Keras's CosineDecay returns float32). Each gets
    the run's dtype; nothing else changes."""
    one_hot, where = tf_v2.one_hot, tf_v2.where

    def where_in_dtype(condition, x=None, y=None, name=None):
        x, y = (v if v is None or not v.dtype.is_floating else tf_v2.cast(v, dtype)
                for v in (tf_v2.convert_to_tensor(x) if isinstance(x, float) else x,
                          tf_v2.convert_to_tensor(y) if isinstance(y, float) else y))
        return where(condition, x, y, name)

    tf_v2.one_hot = lambda *a, **k: one_hot(*a, **{"dtype": dtype, **k})
    tf_v2.where = where_in_dtype


def main():
    src, commit = os.path.abspath(sys.argv[1]), sys.argv[2]
    method = sys.argv[3] if len(sys.argv) > 3 else "simclr"
    dtype_name = sys.argv[4] if len(sys.argv) > 4 else "float32"
    out_dir = sys.argv[5] if len(sys.argv) > 5 else HERE
    sys.path.insert(0, src)
    import tensorflow as tf
    from absl import flags
    from safetensors.numpy import save_file

    import lars_optimizer  # noqa: F401  (model.build_optimizer's)
    import model as model_lib
    import objective as obj_lib
    import run  # noqa: F401  (defines the FLAGS)

    FLAGS = flags.FLAGS
    variant = VARIANTS[method]
    settings = dict(resnet_depth=50, image_size=SIZE, use_blur=False,
                    lineareval_while_pretraining=False, global_bn=False, train_batch_size=BATCH,
                    train_epochs=EPOCHS, warmup_epochs=WARMUP, weight_decay=WD, temperature=TAU,
                    proj_out_dim=PROJ_DIM, optimizer="lars", momentum=0.9, train_mode="pretrain", **variant)
    FLAGS([sys.argv[0]] + [f"--{k}={v}" for k, v in settings.items()])
    FLAGS.width_multiplier = settings["width_multiplier"] = 0.125  # an integer flag: set, not parsed
    rng = np.random.default_rng(VIEW_SEED)  # float32 draws in either dtype: the two runs start equal
    views = []
    for _ in range(STEPS):  # two noisy copies of each image, so that the positives are the closest pairs
        images = rng.standard_normal((BATCH, 3, SIZE, SIZE))
        views.append([(images + NOISE * rng.standard_normal(images.shape)).astype(np.float32).astype(dtype_name)
                      for _ in range(2)])
    features = [tf.constant(np.concatenate([v.transpose(0, 2, 3, 1) for v in pair], axis=-1)) for pair in views]

    def built_model(dtype: str):
        tf.keras.backend.set_floatx(dtype)
        tf.keras.utils.set_random_seed(0)  # Python, NumPy and TF: unseeded Keras initialisers draw from all three
        model = model_lib.Model(num_classes=10)
        model(tf.cast(features[0], dtype), training=False)  # builds the variables; inference: no BN updates
        return model

    model = built_model("float32")
    if dtype_name != "float32":  # the float32 run's initial values, in the run's dtype
        drawn = [v.numpy() for v in model.variables]
        float64_patches(obj_lib.tf, getattr(tf, dtype_name))
        model = built_model(dtype_name)
        for v, x in zip(model.variables, drawn, strict=True):
            v.assign(x.astype(dtype_name))
    strategy = tf.distribute.get_strategy()  # the default strategy: one replica
    learning_rate = model_lib.WarmUpAndCosineDecay(FLAGS.learning_rate, BATCH)
    optimizer = model_lib.build_optimizer(learning_rate)
    optimizer.iterations.assign(FIRST_STEP)
    init = clzoo_state(model, 0)

    def single_step(features):  # run.py main: single_step, without the summaries and metrics
        with tf.GradientTape() as tape:
            projection_head_outputs, _ = model(features, training=True)
            loss, _, _ = obj_lib.add_contrastive_loss(projection_head_outputs, hidden_norm=FLAGS.hidden_norm,
                                                      temperature=FLAGS.temperature, strategy=strategy)
            loss += model_lib.add_weight_decay(model, adjust_per_optimizer=True)
            loss = loss / strategy.num_replicas_in_sync
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses, lrs = [], []
    for s in range(STEPS):
        lrs.append(float(learning_rate(tf.cast(optimizer.iterations, tf.float32))))
        losses.append(float(single_step(features[s])))
    final = clzoo_state(model, STEPS)

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, pair in enumerate(views):
        for i, v in enumerate(pair):
            tensors[f"views/{s}/{i}"] = v
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, f"{method}.safetensors"))
    meta = {
        "argv": clzoo_argv(method),
        "losses": losses,
        "total_steps": EPOCHS + 1,
        "steps_per_epoch": 1,
        "first_step": FIRST_STEP,
        "num_samples": BATCH,
        "repo": "google-research/simclr",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["tf2/run.py", "tf2/model.py", "tf2/resnet.py", "tf2/objective.py", "tf2/lars_optimizer.py"],
            "flags": settings,
            "versions": {"tensorflow": tf.__version__, "tf_keras": __import__("tf_keras").__version__},
            "lrs": lrs,
            "loop": "run.py main's single_step for global steps 1, 2, 3: GradientTape, model(features, "
                    "training=True), add_contrastive_loss (loss_a + loss_b), add_weight_decay (0 with LARS), "
                    "/ num_replicas_in_sync, tape.gradient, LARSOptimizer.apply_gradients",
            "distributed": "the default tf.distribute strategy (one replica)",
            "not_compared": "nothing: running_var is Keras's moving variance of the biased batch variance "
                            "(the test converts it to PyTorch's unbiased one)",
            "keys": "taken from the layer objects: resnet_model.initial_conv_relu_max_pool / block_groups[g]."
                    "layers[b].projection_layers / conv_relu_dropblock_layers -> backbone.* (timm ResNet); "
                    "_projection_head.linear_layers[j].dense / .bn_relu -> projector.{3j, 3j+1}; kernels "
                    "transposed to PyTorch's layout",
            "views": f"numpy default_rng({VIEW_SEED}): per step images = standard_normal((8, 3, 64, 64)), each "
                     f"view images + {NOISE} x standard_normal, rounded to float32; [step][view]; TF gets them "
                     "NHWC, concatenated along channels (run.py's 2 x 3 channel layout)",
            "init_dtype": "drawn in float32 (a float64 run assigns the float32 run's initial values), so that "
                          "float32 and float64 fixtures start equal",
            "init": "TF's own initialisers, tf.keras.utils.set_random_seed(0)",
        },
    }
    with open(os.path.join(out_dir, f"{method}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "lrs": lrs, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
