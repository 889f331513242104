"""SimCLR v1/v2 TensorFlow checkpoints: a TF-free reader, the conversion, and outputs equal to TF's.

References, all independent of clzoo's converter:
* tests/data/golden/tf_bundle: a checkpoint written by TensorFlow's own Saver (reader test);
* tests/data/golden/simclr_layouts.json.gz: every variable name and shape of the 16 SimCLR
  architectures, read from the TF graph the official resnet.py/model_util.py build;
* tests/data/golden/simclr_r50_1x_sk{0,1}.npz: float64 outputs of the official TF code for weights
  `golden_value(name, shape)` (make_golden.py).
"""
import gzip
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import clzoo
from clzoo import CheckpointMismatchError, ConversionError, get_pretrained_cfg
from clzoo.convert.simclr import simclr_tf1_plan
from clzoo.convert.tf_checkpoint import TFCheckpoint, TFCheckpointError, read_tf_checkpoint
from clzoo.models._archs import TFSameAvgPool2x2
from tests.golden_values import golden_input, golden_value
from tests.helpers import write_tf_checkpoint

GOLDEN = Path(__file__).parent / "data" / "golden"
LAYOUTS = json.load(gzip.open(GOLDEN / "simclr_layouts.json.gz", "rt"))
ENTRIES = {  # TF model name -> clzoo entry
    "v1_r50_1x": "simclr_resnet50", "v1_r50_2x": "simclr_resnet50w2", "v1_r50_4x": "simclr_resnet50w4",
    "r50_1x_sk0": "simclrv2_resnet50", "r50_2x_sk0": "simclrv2_resnet50w2", "r101_1x_sk0": "simclrv2_resnet101",
    "r101_2x_sk0": "simclrv2_resnet101w2", "r152_1x_sk0": "simclrv2_resnet152", "r152_2x_sk0": "simclrv2_resnet152w2",
    "r50_1x_sk1": "simclrv2_skresnet50", "r50_2x_sk1": "simclrv2_skresnet50w2", "r101_1x_sk1": "simclrv2_skresnet101",
    "r101_2x_sk1": "simclrv2_skresnet101w2", "r152_1x_sk1": "simclrv2_skresnet152",
    "r152_2x_sk1": "simclrv2_skresnet152w2", "r152_3x_sk1": "simclrv2_skresnet152w3",
}


def tf_variables(model, optimizer_slots=True):
    """The variables of a released checkpoint: the graph's, LARS `Momentum` slots and global_step.

    Released files carry a Momentum slot per trainable variable; a sample of them (every 7th, and
    the heads') keeps the files small while the converter still has to skip them."""
    layout = LAYOUTS[model]
    out = {n: golden_value(n, s) for n, s in layout}
    if optimizer_slots:
        out.update({f"{n}/Momentum": np.ones(s, np.float32) for i, (n, s) in enumerate(layout)
                    if "moving_" not in n and (i % 7 == 0 or n.startswith("head"))})
    out["global_step"] = np.int64(250228)
    return out


def features(model, size, dtype=torch.float32):
    x = torch.from_numpy(golden_input(size, (2, size, size, 3))).permute(0, 3, 1, 2)
    with torch.no_grad():
        return model.to(dtype).eval()(x.to(dtype)).double().numpy()


# ---------------------------------------------------------------------------------------------
# the reader


def test_reader_reads_a_checkpoint_tensorflow_wrote():
    ckpt = TFCheckpoint(GOLDEN / "tf_bundle" / "multi_block.index")
    values = ckpt.read()
    assert len(ckpt) == len(values) == 1803
    for name, value in values.items():
        if name.startswith("var_"):
            assert np.array_equal(value, golden_value(name, (int(name[4:9]) % 3 + 1,))), name
    assert values["global_step"].dtype == np.int64 and int(values["global_step"]) == 250228
    assert values["scalar_f64"].dtype == np.float64 and values["scalar_f64"].shape == () and values["scalar_f64"] == 2.5
    np.testing.assert_array_equal(values["head/kernel"], golden_value("head/kernel", (3, 5)))
    # the 1803 keys do not fit one 256 KiB table block: the index has several
    data = (GOLDEN / "tf_bundle" / "multi_block.index").read_bytes()
    assert len(data) > 262144


def test_reader_accepts_prefix_data_file_directory_and_zip(tmp_path):
    src = GOLDEN / "tf_bundle"
    want = read_tf_checkpoint(src / "multi_block.index", ["head/kernel"])["head/kernel"]
    for path in (src / "multi_block", src / "multi_block.data-00000-of-00001", src):
        assert np.array_equal(TFCheckpoint(path)["head/kernel"], want)
    # SimCLR v1's release: ResNet50_1x/model.ckpt-225206.* in a zip beside a TF-Hub module
    archive = tmp_path / "ResNet50_1x.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(src / "multi_block.index", "ResNet50_1x/model.ckpt-225206.index")
        zf.write(src / "multi_block.data-00000-of-00001", "ResNet50_1x/model.ckpt-225206.data-00000-of-00001")
        zf.writestr("ResNet50_1x/model.ckpt-225206.meta", b"graph")
        zf.writestr("ResNet50_1x/hub/variables/variables.index", b"not this one")
    assert np.array_equal(TFCheckpoint(archive)["head/kernel"], want)


def test_reader_errors_say_what_is_wrong(tmp_path):
    src = GOLDEN / "tf_bundle"
    bad = tmp_path / "bad"
    shutil.copy(src / "multi_block.data-00000-of-00001", str(bad) + ".data-00000-of-00001")
    data = bytearray((src / "multi_block.index").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "bad.index").write_bytes(bytes(data))
    with pytest.raises(TFCheckpointError, match="checksum"):
        TFCheckpoint(tmp_path / "bad.index")
    (tmp_path / "x.index").write_bytes(b"\0" * 100)
    with pytest.raises(TFCheckpointError, match="magic"):
        TFCheckpoint(tmp_path / "x.index")
    shutil.copy(src / "multi_block.index", tmp_path / "nodata.index")
    with pytest.raises(TFCheckpointError, match="shard 0 of 1 is missing"):
        TFCheckpoint(tmp_path / "nodata.index").read(["head/kernel"])
    (tmp_path / "short.data-00000-of-00001").write_bytes(b"\0" * 10)
    shutil.copy(src / "multi_block.index", tmp_path / "short.index")
    with pytest.raises(TFCheckpointError, match="truncated"):
        TFCheckpoint(tmp_path / "short.index").read()


# ---------------------------------------------------------------------------------------------
# layouts: every SimCLR entry is the architecture TF builds


@pytest.mark.parametrize("tf_model", sorted(LAYOUTS))
def test_entry_has_the_tf_layout(tf_model):
    """Every base_model variable maps to a parameter of the clzoo entry with the same number of values,
    and the parameter counts agree exactly (SK attention widths and ResNet-D stems included)."""
    with torch.device("meta"):
        model = clzoo.create_model(ENTRIES[tf_model])
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    shapes = {n: tuple(s) for n, s in LAYOUTS[tf_model]}
    suffix = {"conv": "weight", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_variance": "running_var"}
    got = {}
    for target, name, kind in simclr_tf1_plan(shapes):
        s = shapes[name]
        shape = (s[3], s[2], s[0], s[1]) if kind == "conv" else s  # HWIO -> OIHW
        parts = 2 if "{}" in target else 1  # the SK conv holds both paths
        for i in range(parts):
            got[f"{target.format(i)}.{suffix[kind]}"] = (shape[0] // parts,) + tuple(shape[1:])
    assert got == expected
    tf_params = sum(math.prod(s) for n, s in LAYOUTS[tf_model]
                    if n.startswith("base_model/") and "moving_" not in n)
    assert sum(p.numel() for p in model.parameters()) == tf_params


# ---------------------------------------------------------------------------------------------
# outputs equal the official TF code's


@pytest.mark.parametrize("tf_model", ["r50_1x_sk0", "r50_1x_sk1"])
def test_outputs_equal_the_official_tf_code(tf_model, tmp_path):
    f = tmp_path / "model.ckpt-250228.npz"  # the documented TF-free input: {tf variable name: array}
    np.savez(f, **tf_variables(tf_model))
    model = clzoo.create_model(ENTRIES[tf_model], pretrained=True, pretrained_cfg_overlay=dict(file=str(f)))
    golden = np.load(GOLDEN / f"simclr_{tf_model}.npz")
    for size in (64, 57):  # 57: odd sizes reach the ResNet-D shortcut padding and TF 'SAME' edges
        ref = golden[f"features_{size}"]
        assert np.abs(features(model, size, torch.float64) - ref).max() <= 1e-9
        assert np.abs(features(model, size) - ref).max() <= 1e-5
    assert model.pretrained_cfg["mean"] == (0.0, 0.0, 0.0) and model.pretrained_cfg["std"] == (1.0, 1.0, 1.0)
    if tf_model.endswith("sk1"):  # the test can fail: timm's ResNet-D shortcut has no pooling in layer1
        model.layer1[0].downsample[0] = torch.nn.Identity()
        assert np.abs(features(model, 64, torch.float64) - golden["features_64"]).max() > 1e-5
        assert isinstance(clzoo.create_model("simclrv2_skresnet50").layer1[0].downsample[0], TFSameAvgPool2x2)


def test_v2_download_fetches_index_and_data(mirror, clzoo_home, tmp_path):
    url = get_pretrained_cfg("simclrv2_skresnet50").url
    write_tf_checkpoint(tmp_path / "ckpt", tf_variables("r50_1x_sk1"))
    index = mirror.add(url, data=(tmp_path / "ckpt.index").read_bytes())
    shard = mirror.add(url.replace(".index", ".data-00000-of-00001"),
                       data=(tmp_path / "ckpt.data-00000-of-00001").read_bytes())
    model = clzoo.create_model("simclrv2_skresnet50", pretrained=True)
    assert mirror.requests[index] == mirror.requests[shard] == 1
    golden = np.load(GOLDEN / "simclr_r50_1x_sk1.npz")
    assert np.abs(features(model, 64) - golden["features_64"]).max() <= 1e-5


def test_v1_zip_download(mirror, tmp_path):
    """SimCLR v1 is released as ResNet50_1x.zip; v1's base network is created by the same code as v2 sk0."""
    write_tf_checkpoint(tmp_path / "model.ckpt-225206", tf_variables("v1_r50_1x", optimizer_slots=False))
    archive = tmp_path / "ResNet50_1x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for suffix in (".index", ".data-00000-of-00001"):
            zf.write(tmp_path / f"model.ckpt-225206{suffix}", f"ResNet50_1x/model.ckpt-225206{suffix}")
    mirror.add(get_pretrained_cfg("simclr_resnet50").url, data=archive.read_bytes())
    model = clzoo.create_model("simclr_resnet50", pretrained=True)
    golden = np.load(GOLDEN / "simclr_r50_1x_sk0.npz")
    assert np.abs(features(model, 57) - golden["features_57"]).max() <= 1e-5


def test_ema_weights_and_cli(tmp_path, capsys):
    from clzoo.cli import main
    ema = {("ema_model/" + k if k.startswith("base_model/") else k): v for k, v in tf_variables("r50_1x_sk0").items()}
    write_tf_checkpoint(tmp_path / "ema", ema)
    with pytest.raises(ConversionError, match="simclr_tf1_ema"):
        clzoo.convert_file(tmp_path / "ema.index", "simclr_tf1", tmp_path / "x.safetensors")
    out = tmp_path / "r50_1x_sk0_ema.safetensors"
    assert main(["convert", "simclrv2_resnet50", "--input", str(tmp_path / "ema.index"), "--output", str(out),
                 "--format", "simclr_tf1_ema"]) == 0
    assert "loads into simclrv2_resnet50.in1k" in capsys.readouterr().out
    model = clzoo.create_model("simclrv2_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
    assert np.abs(features(model, 64) - np.load(GOLDEN / "simclr_r50_1x_sk0.npz")["features_64"]).max() <= 1e-5


def test_wrong_architecture_names_what_does_not_fit(tmp_path):
    f = tmp_path / "sk1.npz"
    np.savez(f, **tf_variables("r50_1x_sk1", optimizer_slots=False))
    with pytest.raises(CheckpointMismatchError) as e:  # an sk1 file for the sk0 entry
        clzoo.create_model("simclrv2_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(f)))
    assert "Missing keys (257): conv1.weight" in str(e.value)  # the 7x7 stem
    assert "Unexpected keys (529): conv1.* (13)" in str(e.value)  # the deep ResNet-D stem of sk1
    f2 = tmp_path / "r50_2x.npz"
    np.savez(f2, **{n: np.zeros(s, np.float32) for n, s in LAYOUTS["v1_r50_2x"]})
    with pytest.raises(CheckpointMismatchError, match=r"conv1.weight: checkpoint \(128, 3, 7, 7\) vs model \(64, 3, 7, 7\)"):
        clzoo.create_model("simclr_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(f2)))
    f3 = tmp_path / "moco.npz"
    np.savez(f3, **{"module.encoder_q.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
    with pytest.raises(ConversionError, match="not a SimCLR TF checkpoint"):
        clzoo.create_model("simclr_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(f3)))
