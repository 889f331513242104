"""pretrained=True end to end, offline: a mirror on 127.0.0.1 serving files in the official layouts."""
import argparse
import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file

import clzoo
from clzoo import (CheckpointMismatchError, ConversionError, DownloadError, UnsafeCheckpointError,
                   get_pretrained_cfg)
from clzoo._registry import _weights
from tests.helpers import randomize_bn_stats, save_with_nce_average

MOCO_URL = get_pretrained_cfg("mocov2_resnet50.800ep").url


def moco_checkpoint(seed=0):
    """A random ResNet-50 saved the way facebookresearch/moco saves it (query + key encoders, queue)."""
    torch.manual_seed(seed)
    source = randomize_bn_stats(clzoo.create_model("mocov2_resnet50"), torch.Generator().manual_seed(seed)).eval()
    sd = {}
    for enc in ("encoder_q", "encoder_k"):
        sd.update({f"module.{enc}.{k}": v.clone() for k, v in source.state_dict().items()})
        sd[f"module.{enc}.fc.0.weight"] = torch.randn(2048, 2048)
        sd[f"module.{enc}.fc.0.bias"] = torch.randn(2048)
        sd[f"module.{enc}.fc.2.weight"] = torch.randn(128, 2048)
        sd[f"module.{enc}.fc.2.bias"] = torch.randn(128)
    sd["module.queue"] = torch.randn(128, 4096)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return source, {"epoch": 800, "arch": "resnet50", "state_dict": sd}


@pytest.fixture(scope="module")
def moco():
    return moco_checkpoint()


@pytest.fixture(autouse=True)
def no_published_hashes(monkeypatch):
    """The mirror here serves generated files, which cannot have the md5 MoCo's README publishes; the check
    against published hashes has its own tests (test_hashes.py)."""
    for name, info in list(_weights.items()):
        if info.md5_prefix or info.sha256:
            monkeypatch.setitem(_weights, name, dataclasses.replace(info, md5_prefix=None, sha256=None))


def outputs(model, seed=1):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def test_download_convert_cache_and_load(mirror, moco, clzoo_home):
    source, ckpt = moco
    path = mirror.add(MOCO_URL, ckpt)
    model = clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    assert mirror.requests[path] == 1
    assert torch.equal(outputs(model), outputs(source))

    raw = clzoo_home / "downloads" / "dl.fbaipublicfiles.com" / MOCO_URL.split("/", 3)[3]
    meta = json.loads(raw.with_name(raw.name + ".json").read_text())
    assert meta["size"] == raw.stat().st_size and len(meta["sha256"]) == 64 and meta["url"] == MOCO_URL
    converted = clzoo_home / "converted" / "mocov2_resnet50.800ep.safetensors"
    sd = load_file(converted)
    assert set(sd) == set(source.state_dict())  # timm layout: no fc, no encoder_k, no queue
    assert json.loads(converted.with_name(converted.name + ".json").read_text())["format"] == "moco"

    # a second call neither downloads nor converts
    mtime = converted.stat().st_mtime_ns
    again = clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    assert mirror.requests[path] == 1 and converted.stat().st_mtime_ns == mtime
    assert torch.equal(outputs(again), outputs(source))
    # the model keeps its data config: users get the official preprocessing
    assert again.pretrained_cfg["interpolation"] == "bilinear" and again.pretrained_cfg["crop_pct"] == 0.875


def test_truncated_or_corrupt_cache_is_fetched_again(mirror, moco, clzoo_home):
    source, ckpt = moco
    path = mirror.add(MOCO_URL, ckpt)
    clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    converted = clzoo_home / "converted" / "mocov2_resnet50.800ep.safetensors"
    raw = clzoo_home / "downloads" / "dl.fbaipublicfiles.com" / MOCO_URL.split("/", 3)[3]

    # converted file truncated: converted again from the (intact) download, no new request
    converted.write_bytes(converted.read_bytes()[:1000])
    model = clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    assert mirror.requests[path] == 1
    assert torch.equal(outputs(model), outputs(source))

    # download truncated and conversion gone: fetched again
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    converted.unlink()
    model = clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    assert mirror.requests[path] == 2
    assert torch.equal(outputs(model), outputs(source))

    # same size, flipped bytes: the sha256 catches it
    data = bytearray(raw.read_bytes())
    data[len(data) // 2] ^= 0xFF
    raw.write_bytes(bytes(data))
    converted.unlink()
    clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    assert mirror.requests[path] == 3


def test_broken_connection_is_an_error_and_leaves_no_file(mirror, moco, clzoo_home):
    _, ckpt = moco
    path = mirror.add(MOCO_URL, ckpt)
    mirror.truncate[path] = 10_000
    with pytest.raises(DownloadError, match="truncated|broke off"):
        clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    assert mirror.requests[path] == 3  # 1 try + 2 retries
    leftovers = [p for p in (clzoo_home / "downloads").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


def test_missing_file_on_mirror_says_what_to_do(mirror):
    with pytest.raises(DownloadError) as e:
        clzoo.create_model("mocov2_resnet50.200ep", pretrained=True)
    assert "CLZOO_MIRROR" in str(e.value) and "pretrained_cfg_overlay" in str(e.value)


def test_registered_sha256_is_enforced(mirror, moco, monkeypatch):
    _, ckpt = moco
    mirror.add(MOCO_URL, ckpt)
    info = _weights["mocov2_resnet50.800ep"]
    monkeypatch.setitem(_weights, "mocov2_resnet50.800ep", type(info)(**{**info.__dict__, "sha256": "0" * 64}))
    with pytest.raises(DownloadError, match="sha256"):
        clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)


def test_progress_bar_is_shown(mirror, moco, capsys):
    _, ckpt = moco
    mirror.add(MOCO_URL, ckpt)
    clzoo.create_model("mocov2_resnet50.800ep", pretrained=True)
    err = capsys.readouterr().err
    assert "moco_v2_800ep_pretrain.pth.tar" in err and "100%" in err


def test_explicit_local_file_comes_first(mirror, moco, tmp_path):
    source, ckpt = moco
    path = mirror.add(MOCO_URL, {"state_dict": {}})  # the URL would serve a useless file
    local = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save(ckpt, local)
    model = clzoo.create_model("mocov2_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(local)))
    assert mirror.requests[path] == 0
    assert torch.equal(outputs(model), outputs(source))
    assert model.pretrained_cfg["file"].endswith(".safetensors")  # converted once, cached


def test_hub_comes_before_the_url_and_falls_back_to_it(mirror, tmp_path, monkeypatch):
    """dino_vits16 has hf_hub_id timm/vit_small_patch16_224.dino (timm layout) and an official URL."""
    import huggingface_hub.constants as hf_constants
    from safetensors.torch import save_file

    torch.manual_seed(0)
    hub_model = clzoo.create_model("dino_vits16").eval()
    url_model = clzoo.create_model("dino_vits16").eval()
    url_path = mirror.add(get_pretrained_cfg("dino_vits16").url, url_model.state_dict())

    # offline with an empty hub cache: the hub id fails, the official URL (here: the mirror) is used
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    model = clzoo.create_model("dino_vits16", pretrained=True)
    assert mirror.requests[url_path] == 1
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), url_model(x))

    # with the repo in the hub cache, the hub wins and the URL is not asked
    snap = tmp_path / "hub" / "models--timm--vit_small_patch16_224.dino" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    save_file(hub_model.state_dict(), str(snap / "model.safetensors"))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("a" * 40)
    model = clzoo.create_model("dino_vits16", pretrained=True)
    assert mirror.requests[url_path] == 1
    with torch.no_grad():
        assert torch.equal(model.eval()(x), hub_model(x))


def test_code_running_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": Evil()}, evil)
    with pytest.raises(UnsafeCheckpointError) as e:
        clzoo.create_model("mocov2_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(evil)))
    assert "system" in str(e.value) and "run code" in str(e.value)
    assert not marker.exists()


def test_harmless_objects_of_official_files_load(tmp_path, moco):
    """argparse.Namespace (DINO/CMC args), numpy scalars, and lemniscate's pickled NCEAverage module."""
    source, ckpt = moco
    sd = {k.removeprefix("module.encoder_q."): v for k, v in ckpt["state_dict"].items()
          if k.startswith("module.encoder_q.") and ".fc." not in k}

    # lemniscate pickles its memory-bank module; the class only exists in the authors' repo
    import numpy as np
    ckpt_file = tmp_path / "lemniscate_resnet50_update.pth"
    save_with_nce_average(lambda bank: {
        "epoch": 200, "arch": "resnet50", "best_prec1": np.float64(46.8), "args": argparse.Namespace(lr=0.03),
        "lemniscate": bank, "state_dict": {f"module.{k}": v for k, v in sd.items()} | {
            "module.fc.weight": torch.randn(128, 2048), "module.fc.bias": torch.randn(128)}}, ckpt_file)
    loaded = clzoo.load_checkpoint_file(ckpt_file, ["lib.NCEAverage.NCEAverage"])
    assert type(loaded["lemniscate"]).__module__.startswith("clzoo.stub")  # inert, no authors' code
    assert isinstance(loaded["args"], argparse.Namespace) and float(loaded["best_prec1"]) == 46.8
    with pytest.raises(UnsafeCheckpointError, match="NCEAverage"):
        clzoo.load_checkpoint_file(ckpt_file)  # not allowed outside the lemniscate format
    model = clzoo.create_model("instdisc_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(ckpt_file)))
    assert torch.equal(outputs(model), outputs(source))


def test_wrong_architecture_names_what_does_not_fit(tmp_path):
    vit = clzoo.create_model("mocov3_vits16")
    f = tmp_path / "vit-s-300ep.pth.tar"
    torch.save({"state_dict": {f"module.base_encoder.{k}": v for k, v in vit.state_dict().items()}}, f)
    with pytest.raises(CheckpointMismatchError) as e:
        clzoo.create_model("mocov3_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(f)))
    msg = str(e.value)
    assert "mocov3_resnet50" in msg and "Missing keys (265)" in msg and "layer4.* (" in msg
    assert "Unexpected keys (150)" in msg and "cls_token" in msg and "blocks.* (144)" in msg

    wide = clzoo.create_model("swav_resnet50w2").state_dict()
    f2 = tmp_path / "swav_RN50w2_400ep_pretrain.pth.tar"
    torch.save({f"module.{k}": v for k, v in wide.items()}, f2)
    with pytest.raises(CheckpointMismatchError) as e:
        clzoo.create_model("swav_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(f2)))
    assert "Shape mismatches" in str(e.value) and "conv1.weight: checkpoint (128, 3, 7, 7) vs model (64, 3, 7, 7)" \
        in str(e.value)


def test_wrong_method_names_the_expected_layout(tmp_path):
    swav_file = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save({"module.conv1.weight": torch.zeros(64, 3, 7, 7)}, swav_file)
    with pytest.raises(ConversionError) as e:
        clzoo.create_model("mocov2_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(swav_file)))
    assert "not a moco checkpoint" in str(e.value) and "['state_dict']" in str(e.value)


def test_mocov3_vit_small_loads_into_12_heads(tmp_path):
    """The MoCo v3 ViT-S layout loads and keeps the 12-head function."""
    torch.manual_seed(0)
    src = clzoo.create_model("mocov3_vits16", img_size=32).eval()
    f = tmp_path / "vit-s-300ep.pth.tar"
    sd = {f"module.base_encoder.{k}": v for k, v in src.state_dict().items()}
    sd["module.base_encoder.head.0.weight"] = torch.randn(4096, 384)
    sd.update({f"module.momentum_encoder.{k}": v for k, v in src.state_dict().items()})
    sd["module.predictor.0.weight"] = torch.randn(4096, 256)
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": sd}, f)
    model = clzoo.create_model("mocov3_vits16", img_size=32, pretrained=True, pretrained_cfg_overlay=dict(file=str(f)))
    assert model.blocks[0].attn.num_heads == 12
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), src(x))


def test_vit_weights_resample_to_a_new_image_size(tmp_path):
    torch.manual_seed(0)
    src = clzoo.create_model("dino_vits16")  # 224 px: 14x14 position grid
    f = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(src.state_dict(), f)
    model = clzoo.create_model("dino_vits16", pretrained=True, img_size=64, pretrained_cfg_overlay=dict(file=str(f)))
    assert model.pos_embed.shape == (1, 1 + 16, 384)
    torch.testing.assert_close(model.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)


def test_timm_adaptations_still_apply_to_loaded_weights(tmp_path, moco):
    """in_chans and num_classes differ from the checkpoint: timm adapts the stem and adds a fresh head."""
    source, ckpt = moco
    f = tmp_path / "moco.pth.tar"
    torch.save(ckpt, f)
    gray = clzoo.create_model("mocov2_resnet50", pretrained=True, in_chans=1, num_classes=7,
                              pretrained_cfg_overlay=dict(file=str(f)))
    assert gray.conv1.weight.shape == (64, 1, 7, 7) and gray.fc.out_features == 7
    torch.testing.assert_close(gray.conv1.weight[:, 0], source.conv1.weight.sum(1))
    torch.testing.assert_close(gray.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
