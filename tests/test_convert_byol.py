"""BYOL's dill pickles of Haiku trees: safe loading, conversion, and outputs equal to the official Haiku code.

References independent of clzoo's converter:
* tests/data/golden/byol_dill_tiny.pkl: a BYOL-shaped checkpoint written by dill 0.3.2 itself;
* tests/data/golden/byol_layout.json: module paths and shapes of the official ResNet-50 torso and MLP
  heads, read from `hk.transform_with_state` of deepmind-research byol/utils/networks.py;
* tests/data/golden/byol_res50.npz: float64 outputs of that code for weights `golden_value(name, shape)`.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import clzoo
from clzoo import ConversionError, get_pretrained_cfg
from clzoo._serialization import InertObject, load_foreign_pickle
from tests.golden_values import golden_input, golden_value
from tests.helpers import byol_pickle

GOLDEN = Path(__file__).parent / "data" / "golden"
LAYOUT = json.load(open(GOLDEN / "byol_layout.json"))


def haiku_trees(tag=""):
    """params and state of the official network filled with golden values (`tag` varies them)."""
    params = {m: {k: golden_value(f"{tag}{m}|{k}", s) for k, s in d.items()} for m, d in LAYOUT["params"].items()}
    state = {m: {k: golden_value(f"{tag}{m}|{k}", s) for k, s in d.items()} for m, d in LAYOUT["state"].items()}
    return params, state


@pytest.fixture(scope="module")
def byol_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("byol") / "pretrain_res50x1.pkl"
    online, target = haiku_trees(), haiku_trees("target:")
    byol_pickle(path, *online[:1], online[1], target[0], target[1])
    return path


def inputs(size, dtype=torch.float32):
    x = golden_input(size, (2, size, size, 3)).astype(np.float64) * 4 - 2  # as make_golden.py
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(dtype)


def run(module, x):
    with torch.no_grad():
        return module.to(x.dtype).eval()(x).double().numpy()


def test_a_pickle_dill_wrote_loads_without_dill_haiku_or_jax():
    before = set(sys.modules)
    obj = load_foreign_pickle(GOLDEN / "byol_dill_tiny.pkl")
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("dill", "haiku", "jax", "byol")}
    state = obj["experiment_state"]
    assert state._fields == ("online_params", "target_params", "online_state", "target_state", "opt_state")
    assert type(state.online_params).__module__ == "clzoo.stub.haiku._src.data_structures"
    from clzoo.convert.byol import byol_trees
    online, target = byol_trees(obj, "online"), byol_trees(obj, "target")
    name = "res_net50/~/initial_conv"
    np.testing.assert_array_equal(online[f"params:{name}|w"], golden_value(f"online:{name}|w", (7, 7, 3, 4)))
    np.testing.assert_array_equal(target[f"params:{name}|w"], golden_value(f"target:{name}|w", (7, 7, 3, 4)))
    assert obj["step"] == 3


def test_code_in_a_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Evil2:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    import pickle
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps({"experiment_state": None, "a": Evil(), "b": Evil2()}, protocol=2))
    obj = load_foreign_pickle(f)
    assert isinstance(obj["a"], InertObject) and isinstance(obj["b"], InertObject)
    assert obj["a"].args == (f"touch {marker}",)
    assert not marker.exists()


def test_outputs_equal_the_official_haiku_code(byol_file):
    model = clzoo.create_model("byol_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(byol_file)))
    golden = np.load(GOLDEN / "byol_res50.npz")
    for size in (64, 57):  # Haiku 'SAME' padding: asymmetric on even sizes, symmetric on odd ones
        assert np.abs(run(model, inputs(size, torch.float64)) - golden[f"features_{size}"]).max() <= 1e-9
        assert np.abs(run(model, inputs(size)) - golden[f"features_{size}"]).max() <= 1e-5
    # the test can fail: PyTorch's symmetric padding of the 7x7/2 stem is off by one pixel
    same = model.conv1
    model.conv1 = torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    model.conv1.weight = same.weight
    assert np.abs(run(model, inputs(64, torch.float64)) - golden["features_64"]).max() > 1e-3


def test_heads_and_target_network(byol_file):
    ckpt = clzoo.load_pretraining_checkpoint("byol_resnet50", file=byol_file)
    assert ckpt.method == "byol" and set(ckpt.online.heads) == {"projector", "predictor"}
    golden = np.load(GOLDEN / "byol_res50.npz")
    x = inputs(64, torch.float64)
    emb = torch.from_numpy(run(ckpt.online.backbone, x))
    proj = run(ckpt.online.heads["projector"], emb)
    assert np.abs(proj - golden["projection_64"]).max() <= 1e-9
    pred = run(ckpt.online.heads["predictor"], torch.from_numpy(proj))
    assert np.abs(pred - golden["prediction_64"]).max() <= 1e-9
    # the target network is the file's target_params/target_state, not a copy of the online one
    target_conv = ckpt.target.backbone.conv1.weight.detach()
    want = golden_value("target:res_net50/~/initial_conv|w", (7, 7, 3, 64))
    torch.testing.assert_close(target_conv, torch.from_numpy(want).permute(3, 2, 0, 1))
    assert not torch.equal(target_conv, ckpt.online.backbone.conv1.weight)
    assert ckpt.meta["step"] == 1000


def test_download_from_the_official_url(mirror, byol_file):
    path = mirror.add(get_pretrained_cfg("byol_resnet50").url, data=byol_file.read_bytes())
    model = clzoo.create_model("byol_resnet50", pretrained=True)
    assert mirror.requests[path] == 1
    assert np.abs(run(model, inputs(64)) - np.load(GOLDEN / "byol_res50.npz")["features_64"]).max() <= 1e-5
    assert model.pretrained_cfg["interpolation"] == "bicubic"


def test_npz_of_flattened_trees(tmp_path):
    params, state = haiku_trees()
    flat = {f"params:{m}|{k}": v for m, d in params.items() for k, v in d.items()}
    flat.update({f"state:{m}|{k}": v for m, d in state.items() for k, v in d.items()})
    f = tmp_path / "byol_online.npz"
    np.savez(f, **flat)
    model = clzoo.create_model("byol_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(f)))
    assert np.abs(run(model, inputs(57)) - np.load(GOLDEN / "byol_res50.npz")["features_57"]).max() <= 1e-5


def test_wrong_files_say_what_they_are(tmp_path):
    moco = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": {"module.encoder_q.conv1.weight": torch.zeros(64, 3, 7, 7)}}, moco)
    with pytest.raises(ConversionError, match="not a BYOL checkpoint"):
        clzoo.create_model("byol_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(moco)))
    import pickle
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"params": {"w": np.zeros(3)}}, protocol=2))
    with pytest.raises(ConversionError, match="expected a dict with 'experiment_state'"):
        clzoo.create_model("byol_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(other)))
