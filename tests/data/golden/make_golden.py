"""Golden outputs and variable layouts from the *official* SimCLR (TF1) and BYOL (Haiku) code.

Not part of the test suite and not run in CI: it needs TensorFlow, JAX, Haiku and checkouts of the
official repositories. It was run once (tensorflow-cpu 2.15.1 through tf.compat.v1, jax 0.4.34,
dm-haiku 0.0.13, numpy 1.26) in a scratch virtualenv:

    python tests/data/golden/make_golden.py --simclr-repo PATH/google-research/simclr \
        --byol-repo PATH/deepmind-research --out tests/data/golden

It builds the networks with the official code (google-research/simclr `resnet.py` + `model_util.py`,
deepmind-research `byol/utils/networks.py`), fills every variable with `golden_value(name, shape)`
(tests/golden_values.py, deterministic per name), and records:

* `simclr_layouts.json.gz`: {model: [[tf variable name, shape], ...]} in the order TF created them,
  for every SimCLR v1/v2 architecture (base network + heads), read from the TF graph;
* `simclr_<model>.npz`: inputs and float64 outputs of the base network (and of the v2
  contrastive head) for r50_1x_sk0 and r50_1x_sk1, at 64 px and 57 px (odd sizes exercise the
  ResNet-D shortcut padding);
* `byol_layout.json`: Haiku module paths and shapes of params and state of the official ResNet-50
  torso and MLP heads; `byol_res50.npz`: float64 outputs of the torso and the projector/predictor;
* `byol_dill_tiny.pkl`: a small BYOL-shaped checkpoint written by dill 0.3.2 itself (protocol 2, as
  byol/utils/checkpointing.py does), with the NamedTuple defined in a module `byol.byol_experiment`
  and a stand-in of Haiku 0.0.2's `FlatMapping` (same module path, same `__reduce__`);
* `tf_bundle/multi_block.{index,data-00000-of-00001}`: a TF-written checkpoint with 1800 variables,
  big enough for its index table to span several SSTable blocks (tests the reader against TF's
  own writer, not against a writer of ours).
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tests.golden_values import golden_input, golden_value  # noqa: E402

SIMCLR_MODELS = {  # name: (depth, width, sk)
    "v1_r50_1x": (50, 1, False), "v1_r50_2x": (50, 2, False), "v1_r50_4x": (50, 4, False),
    "r50_1x_sk0": (50, 1, False), "r50_1x_sk1": (50, 1, True), "r50_2x_sk0": (50, 2, False),
    "r50_2x_sk1": (50, 2, True), "r101_1x_sk0": (101, 1, False), "r101_1x_sk1": (101, 1, True),
    "r101_2x_sk0": (101, 2, False), "r101_2x_sk1": (101, 2, True), "r152_1x_sk0": (152, 1, False),
    "r152_1x_sk1": (152, 1, True), "r152_2x_sk0": (152, 2, False), "r152_2x_sk1": (152, 2, True),
    "r152_3x_sk1": (152, 3, True),
}


def _simclr_setup(repo):
    sys.path.insert(0, repo)
    from absl import flags
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    f = flags
    for name, value in [("global_bn", True), ("use_tpu", False)]:
        f.DEFINE_bool(name, value, "")
    for name, value in [("batch_norm_decay", 0.9), ("sk_ratio", 0.0), ("se_ratio", 0.0)]:
        f.DEFINE_float(name, value, "")
    for name, value in [("fine_tune_after_block", -1), ("proj_out_dim", 128), ("num_proj_layers", 3),
                        ("ft_proj_selector", 0)]:
        f.DEFINE_integer(name, value, "")
    f.DEFINE_string("train_mode", "pretrain", "")
    f.DEFINE_string("proj_head_mode", "nonlinear", "")
    f.DEFINE_string("optimizer", "lars", "")
    flags.FLAGS(["make_golden"])
    import model_util  # noqa: F401  (official)
    import resnet  # noqa: F401  (official)
    return tf, flags.FLAGS


def simclr(repo, out):
    tf, FLAGS = _simclr_setup(repo)
    import model_util
    import resnet

    def build(depth, width, sk, x, v2):
        FLAGS.sk_ratio = 0.0625 if sk else 0.0
        with tf.variable_scope("base_model"):
            hiddens = resnet.resnet_v1(depth, width, cifar_stem=False)(x, is_training=False)
        proj = model_util.projection_head(hiddens, is_training=False) if v2 else None
        model_util.supervised_head(hiddens, 1000, is_training=False)
        return hiddens, proj

    layouts = {}
    for name, (depth, width, sk) in SIMCLR_MODELS.items():
        with tf.Graph().as_default():
            x = tf.placeholder(tf.float32, [None, 64, 64, 3])
            build(depth, width, sk, x, v2=not name.startswith("v1"))
            layouts[name] = [[v.op.name, v.shape.as_list()] for v in tf.global_variables()]
    with gzip.open(os.path.join(out, "simclr_layouts.json.gz"), "wt") as fh:
        json.dump(layouts, fh)

    for name in ("r50_1x_sk0", "r50_1x_sk1"):
        depth, width, sk = SIMCLR_MODELS[name]
        result = {}
        for size in (64, 57):
            with tf.Graph().as_default():
                x = tf.placeholder(tf.float64, [None, size, size, 3])
                hiddens, proj = build(depth, width, sk, x, v2=True)
                assigns = [v.assign(golden_value(v.op.name, v.shape.as_list()).astype(np.float64))
                           for v in tf.global_variables()]
                inputs = golden_input(size, (2, size, size, 3)).astype(np.float64)
                with tf.Session() as sess:
                    sess.run(assigns)
                    h, p = sess.run([hiddens, proj], {x: inputs})
            result[f"features_{size}"] = h
            result[f"projection_{size}"] = p
        np.savez_compressed(os.path.join(out, f"simclr_{name}.npz"), **result)


def tf_bundle(out):
    import tensorflow.compat.v1 as tf
    os.makedirs(os.path.join(out, "tf_bundle"), exist_ok=True)
    with tf.Graph().as_default():
        variables = []
        for i in range(1800):  # unique leading bytes defeat the prefix compression: > 256 KiB of keys
            name = f"var_{i:05d}/" + "scope_name_long_enough_to_fill_several_index_blocks/" * 3 + "kernel"
            variables.append(tf.get_variable(name, initializer=golden_value(name, (i % 3 + 1,))))
        variables.append(tf.get_variable("head/kernel", initializer=golden_value("head/kernel", (3, 5))))
        variables.append(tf.get_variable("scalar_f64", initializer=np.float64(2.5)))
        variables.append(tf.train.get_or_create_global_step())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(tf.train.get_global_step().assign(250228))
            tf.train.Saver().save(sess, os.path.join(out, "tf_bundle", "multi_block"), write_meta_graph=False,
                                  write_state=False)


def byol(repo, out):
    sys.path.insert(0, repo)
    import jax
    jax.config.update("jax_enable_x64", True)
    import haiku as hk
    from byol.utils import networks  # official

    bn_config = {"decay_rate": 0.9, "eps": 1e-5, "create_scale": True, "create_offset": True}

    def forward(x, is_training):
        net = networks.ResNet50(num_classes=None, bn_config=bn_config, width_multiplier=1)
        projector = networks.MLP(name="projector", hidden_size=4096, output_size=256, bn_config=bn_config)
        predictor = networks.MLP(name="predictor", hidden_size=4096, output_size=256, bn_config=bn_config)
        emb = net(x, is_training=is_training)
        proj = projector(emb, is_training)
        return emb, proj, predictor(proj, is_training)

    f = hk.transform_with_state(forward)
    inputs = {s: golden_input(s, (2, s, s, 3)).astype(np.float64) * 4 - 2 for s in (64, 57)}
    params, state = f.init(jax.random.PRNGKey(0), inputs[64], True)
    layout = {"params": {m: {k: list(v.shape) for k, v in d.items()} for m, d in params.items()},
              "state": {m: {k: list(v.shape) for k, v in d.items()} for m, d in state.items()}}
    with open(os.path.join(out, "byol_layout.json"), "w") as fh:
        json.dump(layout, fh, indent=0, sort_keys=True)
    params = {m: {k: golden_value(f"{m}|{k}", v.shape).astype(np.float64) for k, v in d.items()}
              for m, d in params.items()}
    state = {m: {k: golden_value(f"{m}|{k}", v.shape).astype(np.float64 if k != "counter" else np.int32)
                 for k, v in d.items()} for m, d in state.items()}
    result = {}
    for s, x in inputs.items():
        (emb, proj, pred), _ = f.apply(params, state, None, x, False)
        result.update({f"features_{s}": np.asarray(emb),
                       f"projection_{s}": np.asarray(proj), f"prediction_{s}": np.asarray(pred)})
    np.savez_compressed(os.path.join(out, "byol_res50.npz"), **result)


def byol_dill_fixture(out):
    import types

    import dill

    from tests.byol_standins import byol_standin_types
    # haiku 0.0.2 (Aug 2020) pickles FlatMapping as FlatMapping(dict)
    hk_mod, byol_mod, FlatMapping, _ByolExperimentState = byol_standin_types()
    fake = {name: types.ModuleType(name) for name in ("haiku", "haiku._src", "byol")}
    fake.update({hk_mod.__name__: hk_mod, byol_mod.__name__: byol_mod})
    assert not set(fake) & set(sys.modules), "run before importing haiku / byol"
    sys.modules.update(fake)

    def tree(kind, branch):
        mods = {"res_net50/~/initial_conv": {"w": (7, 7, 3, 4)},
                "res_net50/~/initial_batchnorm": {"scale": (1, 1, 1, 4), "offset": (1, 1, 1, 4)}}
        if kind == "state":
            mods = {"res_net50/~/initial_batchnorm/~/mean_ema": {"average": (1, 1, 1, 4), "hidden": (1, 1, 1, 4),
                                                                 "counter": ()}}
        return FlatMapping({m: FlatMapping({k: golden_value(f"{branch}:{m}|{k}", s) for k, s in d.items()})
                            for m, d in mods.items()})

    state = _ByolExperimentState(tree("params", "online"), tree("params", "target"), tree("state", "online"),
                                 tree("state", "target"), ())
    with open(os.path.join(out, "byol_dill_tiny.pkl"), "wb") as fh:
        dill.dump(dict(experiment_state=state, step=3, rng=np.zeros(2, np.uint32)), fh, protocol=2)
    for name in fake:
        del sys.modules[name]


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--simclr-repo", required=True)
    p.add_argument("--byol-repo", required=True)
    p.add_argument("--out", default=os.path.dirname(__file__))
    a = p.parse_args()
    byol_dill_fixture(a.out)
    tf_bundle(a.out)
    simclr(a.simclr_repo, a.out)
    byol(a.byol_repo, a.out)
