"""Dense features (features_only, the ViT simple feature pyramid) and embedding extraction.

References are independent of the code under test: a ViT's blocks run by hand, timm's own transform
and a plain batched forward, files written with safetensors directly.
"""
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform

import clzoo
from clzoo.cli import main as cli_main
from clzoo.features import SimpleFeaturePyramid, data_config, extract_features, load_encoder, load_features


def write_images(root, n, size=(40, 40), seed=0, classes=None):
    """n random RGB PNGs (sizes vary a little) under root, or under root/CLASS/ round-robin; their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = os.path.join(root, classes[i % len(classes)]) if classes else root
        os.makedirs(sub, exist_ok=True)
        h, w = size[0] + int(rng.integers(0, 8)), size[1] + int(rng.integers(0, 8))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if classes:  # a class is a colour, so even random features separate them somewhat
            arr[h // 4:, : w // 2] = [(230, 30, 30), (30, 220, 40), (40, 40, 230)][i % len(classes)]
        path = os.path.join(sub, f"img{i:03d}.png")
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def manual_vit_tokens(vit, x):
    """Tokens after every block, computed by running the ViT's modules by hand."""
    t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    out = []
    for blk in vit.blocks:
        t = blk(t)
        out.append(t)
    return out


# ---------------------------------------------------------------------------------------------
# features_only

@pytest.mark.parametrize("name", clzoo.list_models())
def test_features_only_every_entry(name):
    """Every entry builds with features_only and its maps have the channels/strides feature_info states
    (shape-only forward on the meta device: no memory, no compute); ViTs also build the pyramid."""
    vit = "vit" in name
    kw = dict(img_size=64) if vit else {}
    with torch.device("meta"):
        model = clzoo.create_model(name, features_only=True, **kw)
        feats = model(torch.empty(2, 3, 64, 64))
        assert [f.shape[1] for f in feats] == model.feature_info.channels()
        assert [64 // f.shape[-1] for f in feats] == model.feature_info.reduction()
        if vit:
            assert model.feature_info.reduction() == [model.model.patch_embed.patch_size[0]] * 3
            pyramid = clzoo.create_model(name, features_only=True, feature_cls="pyramid", **kw)
            levels = pyramid(torch.empty(2, 3, 64, 64))
            assert [tuple(f.shape) for f in levels] == [(2, 256, 16, 16), (2, 256, 8, 8), (2, 256, 4, 4), (2, 256, 2, 2)]
        else:
            assert model.feature_info.reduction() == [2, 4, 8, 16, 32]


def resnet_stage_outputs(m, x):
    """A timm ResNet's stem and stage outputs, computed by running its modules by hand."""
    x = m.act1(m.bn1(m.conv1(x)))
    out = [x]
    x = m.maxpool(x)
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        x = layer(x)
        out.append(x)
    return out


@pytest.mark.parametrize("name", ["instdisc_resnet18", "byol_resnet50", "cmc_resnet50half"])
def test_resnet_features_are_the_stage_outputs(name):
    """BasicBlock ResNet, Haiku 'SAME'-padded ResNet, and CMC (the two branches' maps concatenated)."""
    fmodel = clzoo.create_model(name, features_only=True).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = fmodel(x)
        if name.startswith("cmc"):  # a getter wrapper around CMCResNet
            cmc = fmodel.model
            l, ab = cmc.split_views(x)
            expected = [torch.cat(p, 1) for p in zip(resnet_stage_outputs(cmc.l_to_ab, l),
                                                       resnet_stage_outputs(cmc.ab_to_l, ab))]
        else:  # FeatureListNet keeps the ResNet's modules under their names
            expected = resnet_stage_outputs(fmodel, x)
    assert len(feats) == 5
    for f, e in zip(feats, expected):
        torch.testing.assert_close(f, e)
    assert fmodel.feature_info.channels() == [e.shape[1] for e in expected]


def test_vit_features_are_block_outputs_reshaped_to_nchw():
    kw = dict(img_size=64, depth=4)  # a 4-block DINO ViT-S/16 keeps the test fast
    vit = clzoo.create_model("dino_vits16", **kw).eval()
    fmodel = clzoo.create_model("dino_vits16", features_only=True, out_indices=(1, 3), **kw).eval()
    missing, unexpected = fmodel.model.load_state_dict(vit.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"norm.weight", "norm.bias"}  # pruned: no final norm / head
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = manual_vit_tokens(vit, x)
        feats = fmodel(x)
    for f, t in zip(feats, (tokens[1], tokens[3])):
        patches = t[:, 1:]  # drop [CLS]; row-major 4x4 grid
        torch.testing.assert_close(f, patches.transpose(1, 2).reshape(2, 384, 4, 4))


# ---------------------------------------------------------------------------------------------
# simple feature pyramid

def test_pyramid_levels_rescale_the_last_block_and_keep_vit_weights(tmp_path):
    kw = dict(img_size=64, depth=4)
    vit = clzoo.create_model("dino_vits16", **kw).eval()
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    pyr = clzoo.create_model("dino_vits16", pretrained=True, features_only=True, feature_cls="pyramid",
                             pretrained_cfg_overlay=dict(file=str(weights)), **kw).eval()
    assert isinstance(pyr, SimpleFeaturePyramid)
    assert pyr.feature_info.channels() == [256] * 4 and pyr.feature_info.reduction() == [4, 8, 16, 32]
    torch.testing.assert_close(pyr.model.blocks[3].attn.qkv.weight, vit.blocks[3].attn.qkv.weight)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        last = manual_vit_tokens(vit, x)[-1][:, 1:].transpose(1, 2).reshape(2, 384, 4, 4)
        levels = pyr(x)
        for level, module in zip(levels, pyr.levels):
            torch.testing.assert_close(level, module(last))
    # stride 4 = two 2x transposed convs (384 -> 192 -> 96 channels), stride 32 = 2x2 max-pool
    assert [m.out_channels for m in pyr.levels[0][0] if isinstance(m, torch.nn.ConvTranspose2d)] == [192, 96]
    assert isinstance(pyr.levels[3][0], torch.nn.MaxPool2d)
    assert [tuple(f.shape[-2:]) for f in levels] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_pyramid_options_and_errors():
    pyr = clzoo.create_model("vit_tiny_patch16_224", img_size=64, features_only=True, feature_cls="pyramid",
                             out_indices=(1, 3))
    assert pyr.feature_info.reduction() == [8, 32] and len(pyr.levels) == 2
    p8 = SimpleFeaturePyramid(clzoo.create_model("dino_vits8", img_size=32, depth=2), out_channels=64)
    assert p8.feature_info.channels() == [64] * 4
    with torch.no_grad():  # patch 8: stride 4 is one transposed conv, stride 32 a 4x4 max-pool
        assert [tuple(f.shape) for f in p8(torch.randn(1, 3, 32, 32))] == [
            (1, 64, 8, 8), (1, 64, 4, 4), (1, 64, 2, 2), (1, 64, 1, 1)]
    with pytest.raises(TypeError, match="ResNets give strides 4-32"):
        clzoo.create_model("mocov2_resnet50", features_only=True, feature_cls="pyramid")


# ---------------------------------------------------------------------------------------------
# extraction

@pytest.fixture(scope="module")
def images_100(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_images(str(root / "a"), 60, seed=1)
    write_images(str(root / "b" / "deeper"), 40, seed=2)
    return root


@pytest.fixture(scope="module")
def tiny_vit_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)
    path = tmp_path_factory.mktemp("w") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def plain_forward(model, root):
    """Reference: timm's eval transform on every file (sorted paths), one batched forward."""
    names = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    tf = create_transform(**timm.data.resolve_model_data_config(model) | {"input_size": (3, 32, 32)})
    x = torch.stack([tf(Image.open(os.path.join(root, n)).convert("RGB")) for n in names])
    with torch.no_grad():
        return model(x), names


def test_extract_100_images_equals_plain_batched_forward(images_100, tiny_vit_weights):
    model = load_encoder("vit_tiny_patch16_224", weights=tiny_vit_weights, img_size=32)
    assert data_config(model)["input_size"] == (3, 32, 32)
    expected, names = plain_forward(model, str(images_100))
    model.train()  # extraction runs in eval mode and restores the mode
    emb = extract_features(model, images_100, batch_size=16, progress=False)
    assert model.training
    assert len(names) == 100 and emb.names == names and emb.labels is None
    torch.testing.assert_close(emb.features, expected, rtol=1e-4, atol=1e-5)
    # a model built for 32 px by create_model (its pretrained cfg still says 224) is fed 32 px too
    direct = clzoo.create_model("vit_tiny_patch16_224", img_size=32)
    direct.load_state_dict(model.state_dict())
    assert data_config(direct)["input_size"] == (3, 32, 32)
    torch.testing.assert_close(extract_features(direct, images_100 / "b", progress=False).features, expected[60:],
                               rtol=1e-4, atol=1e-5)
    # a preprocessed tensor and a dataset of (uint8 image, label) pairs give the same rows
    model.eval()
    tf = create_transform(**data_config(model))
    x = torch.stack([tf(Image.open(images_100 / n).convert("RGB")) for n in names[:10]])
    torch.testing.assert_close(extract_features(model, x, progress=False).features, expected[:10], rtol=1e-4, atol=1e-5)
    pairs = [(torch.from_numpy(np.array(Image.open(images_100 / n).convert("RGB"))).permute(2, 0, 1).contiguous(), i)
             for i, n in enumerate(names[:10])]
    emb = extract_features(model, pairs, batch_size=3, progress=False)
    torch.testing.assert_close(emb.features, expected[:10], rtol=1e-4, atol=1e-5)
    assert emb.labels.tolist() == list(range(10))


def test_extract_resumes_after_an_interruption(images_100, tiny_vit_weights, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for p in sorted(images_100.rglob("*.png"))[:40]:
        (root / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    names = sorted(os.listdir(root))
    good = (root / names[30]).read_bytes()
    (root / names[30]).write_bytes(b"not a png")
    model = load_encoder("vit_tiny_patch16_224", weights=tiny_vit_weights, img_size=32)
    out = tmp_path / "feats.safetensors"
    with pytest.raises(OSError, match=names[30]):
        extract_features(model, root, batch_size=8, out=out, chunk_size=12, progress=False)
    parts = sorted(p.name for p in (tmp_path / "feats.safetensors.parts").glob("*.safetensors"))
    assert parts == ["0000000000.safetensors", "0000000012.safetensors"] and not out.exists()

    (root / names[30]).write_bytes(good)
    seen = []
    hook = model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    emb = extract_features(model, root, batch_size=8, out=out, chunk_size=12, progress=False)
    hook.remove()
    assert sum(seen) == 16  # only images 24..39 ran
    assert not (tmp_path / "feats.safetensors.parts").exists()
    expected, _ = plain_forward(model, str(root))
    torch.testing.assert_close(emb.features, expected, rtol=1e-4, atol=1e-5)
    saved = load_features(out)
    assert saved.names == names and torch.equal(saved.features, emb.features)
    assert saved.metadata["num_images"] == "40"

    # parts left by another model are discarded, not mixed in
    other = load_encoder("vit_tiny_patch16_224", pretrained=False, img_size=32)
    (tmp_path / "feats.safetensors.parts").mkdir()
    (tmp_path / "feats.safetensors.parts" / "0000000000.safetensors").write_bytes(b"stale")
    emb2 = extract_features(other, root, out=out, chunk_size=12, progress=False)
    torch.testing.assert_close(emb2.features, plain_forward(other, str(root))[0], rtol=1e-4, atol=1e-5)


def test_cli_extract_and_load_encoder_sources(images_100, tiny_vit_weights, tmp_path, capsys):
    out = tmp_path / "feats.safetensors"
    assert cli_main(["extract", "--model", "vit_tiny_patch16_224", "--weights", str(tiny_vit_weights),
                     "--img-size", "32", "--images", str(images_100 / "b"), "--out", str(out), "--workers", "0"]) == 0
    assert "40 x 192" in capsys.readouterr().out
    model = load_encoder("vit_tiny_patch16_224", weights=tiny_vit_weights, img_size=32)
    expected, names = plain_forward(model, str(images_100 / "b"))
    saved = load_features(out)
    assert saved.names == names
    torch.testing.assert_close(saved.features, expected, rtol=1e-4, atol=1e-5)

    # a run directory (model.safetensors + timm config.json) loads with its own weights
    run = tmp_path / "run"
    timm.models.save_for_hf(model, str(run), safe_serialization=True)
    from_dir = load_encoder(str(run))
    torch.testing.assert_close(from_dir.state_dict()["blocks.0.attn.qkv.weight"],
                               model.state_dict()["blocks.0.attn.qkv.weight"])
    with pytest.raises(ValueError, match="--model ARCH"):
        load_encoder(str(tiny_vit_weights))
    with pytest.raises(ValueError, match="run directory"):
        load_encoder(str(run), weights=tiny_vit_weights)
    assert cli_main(["extract", "--model", "resnet18", "--random-init", "--images", str(tmp_path / "nothing"),
                     "--out", str(out)]) == 2
