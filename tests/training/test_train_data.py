"""Datasets and batched augmentations: determinism, independence from batching, torchvision / PIL
oracles for the photometric ops, corrupt-image skipping."""

import os

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

from training.data import SkipUnreadable, build_dataset, collate
from training.data.synthetic import SyntheticShapes, render
from training.data.transforms import (RandomPhotometric, RandomResizedCrop, _autocontrast, _equalize, _posterize,
                                      _sharpness, _solarize, adjust_hue, build_views, ColorJitter, RandAugment)


def test_synthetic_deterministic_and_batch_independent():
    a = render(torch.tensor([3, 11, 42]), 24, seed=5)
    b = render(torch.tensor([42]), 24, seed=5)
    assert torch.equal(a[2], b[0])
    assert not torch.equal(render(torch.tensor([42]), 24, seed=6)[0], b[0])
    train, test = SyntheticShapes("train", 16, seed=0), SyntheticShapes("test", 16, seed=0)
    assert len(train) == 10_000 and len(test) == 2_000
    assert not torch.equal(train[0][0], test[0][0])  # the held-out split is a different stream
    assert torch.bincount(train.targets, minlength=10).min() > 800  # about balanced
    x, y = train[7]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and y == int(train.targets[7])
    assert render(torch.tensor([0]), 50).shape == (1, 3, 50, 50)  # any resolution


def test_views_depend_only_on_seed_epoch_index():
    images = render(torch.arange(8), 32)
    vm = build_views("infomin", 32, seed=3, jigsaw="color")
    full = vm(images, torch.arange(8), epoch=2)
    part = vm(images[5:], torch.arange(5, 8), epoch=2)  # another process's slice, another batch
    for v_full, v_part in zip(full["views"], part["views"]):
        assert torch.allclose(v_full[5:], v_part)
    assert torch.allclose(full["jigsaw"][5:], part["jigsaw"])
    other_epoch = vm(images, torch.arange(8), epoch=3)
    assert not torch.allclose(full["views"][0], other_epoch["views"][0])
    assert not torch.allclose(full["views"][0], full["views"][1])  # two different views
    assert full["jigsaw"].shape == (8, 9, 3, 9, 9)  # 3 x 12-px cells of a 36-px crop, 64/85 of each


def test_random_resized_crop_boxes():
    rrc = RandomResizedCrop(32, scale=(0.2, 1.0))
    u = torch.rand(500, rrc.n, generator=torch.Generator().manual_seed(0))
    H, W = torch.full((500,), 40), torch.full((500,), 60)
    box = rrc.boxes(H, W, u)
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    assert (box[:, 0] >= 0).all() and (box[:, 1] >= 0).all() and (box[:, 2] <= 60).all() and (box[:, 3] <= 40).all()
    area = w * h / (40 * 60)
    assert area.min() >= 0.2 - 0.02 and area.max() <= 1.0
    assert ((w / h) >= 3 / 4 - 0.05).all() and ((w / h) <= 4 / 3 + 0.05).all()
    # different-size images take the per-image path and give the same geometry rules
    imgs = [torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8), torch.randint(0, 255, (3, 50, 30), dtype=torch.uint8)]
    assert rrc(imgs, u[:2]).shape == (2, 3, 32, 32)


def test_color_jitter_matches_torchvision_ops():
    """With a fixed order and factors, each op equals torchvision's functional version."""
    x = render(torch.arange(4), 16).float() / 255
    b, c, s, h = 1.3, 0.7, 1.5, 0.15
    ref = torch.stack([TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(im, b), c), s), h)
                       for im in x])
    cj = ColorJitter(0.4, 0.4, 0.6, 0.2, p=1.0)
    u = torch.zeros(4, cj.n)
    u[:, 1], u[:, 2], u[:, 3], u[:, 4] = (b - 0.6) / 0.8, (c - 0.6) / 0.8, (s - 0.4) / 1.2, (h + 0.2) / 0.4
    u[:, 5:9] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # order: brightness, contrast, saturation, hue
    assert torch.allclose(cj(x, u), ref, atol=2e-3)
    assert torch.allclose(adjust_hue(x, torch.full((4,), -0.3)), torch.stack([TF.adjust_hue(im, -0.3) for im in x]),
                          atol=2e-3)


def test_equalize_and_autocontrast_match_pil():
    x = render(torch.arange(3), 20)
    x[1] = x[1] // 3 + 40  # a low-contrast image
    for i in range(3):
        pil = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        eq = torch.from_numpy(np.array(ImageOps.equalize(pil))).permute(2, 0, 1).float()
        ac = torch.from_numpy(np.array(ImageOps.autocontrast(pil))).permute(2, 0, 1).float()
        xf = x[i:i + 1].float() / 255
        assert (_equalize(xf)[0] * 255 - eq).abs().max() <= 1
        assert (_autocontrast(xf)[0] * 255 - ac).abs().max() <= 1.01


def test_pirl_photometric_matches_vissls_pil_ops():
    """RandomPhotometric = VISSL's ImgPilRandomPhotometric: with probability p, PIL posterize(bits),
    ImageEnhance.Sharpness(f), solarize(threshold), autocontrast, in that order, on 8-bit images: each op
    within one 8-bit level of PIL's on the same input, and the chain in that order."""
    from PIL import ImageEnhance
    x = render(torch.arange(4), 20)
    u = torch.tensor([[0.1, 0.0, 0.0, 0.999], [0.5, 0.99, 0.99, 0.5], [0.6, 0.5, 0.3, 0.8], [0.65, 0.3, 0.6, 0.1]])
    y = RandomPhotometric(0.66)(x.float() / 255, u)

    def t(img):
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).float()
    for i, (bits, t_sol) in enumerate([(4, 256), (8, 128), (6, 205), (5, 25)]):
        assert int(u[i, 1] * 5) + 4 == bits and int(u[i, 3] * 257) == t_sol
        f = 0.1 + 1.8 * float(u[i, 2])
        pil = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        p1 = ImageOps.posterize(pil, bits)
        assert torch.equal(_posterize(t(pil)[None] / 255, torch.tensor([bits]))[0] * 255, t(p1))
        p2 = ImageEnhance.Sharpness(p1).enhance(f)
        assert ((_sharpness(t(p1)[None] / 255, torch.tensor([f]))[0] * 255).round() - t(p2)).abs().max() <= 1
        p3 = ImageOps.solarize(p2, t_sol)
        assert torch.equal(_solarize(t(p2)[None] / 255, torch.tensor([t_sol]))[0] * 255, t(p3))
        # the chain in VISSL's order, with clzoo's 8-bit sharpness output as PIL's solarize input (so that a
        # one-level rounding difference cannot flip a pixel at the threshold)
        mine = (_sharpness(t(p1)[None] / 255, torch.tensor([f]))[0] * 255).round().byte().permute(1, 2, 0).numpy()
        ref = t(ImageOps.autocontrast(ImageOps.solarize(Image.fromarray(np.ascontiguousarray(mine)), t_sol)))
        assert (y[i] * 255 - ref).abs().max() <= 1.01, i
    skipped = RandomPhotometric(0.66)(x.float() / 255, torch.tensor([[0.7, 0.5, 0.5, 0.5]] * 4))
    assert torch.equal(skipped, x.float() / 255)  # u0 >= p: untouched
    assert not torch.allclose(y, x.float() / 255)
    pirl = build_views("pirl", 16, jigsaw="color")
    assert any(isinstance(s, RandomPhotometric) for s in pirl.views[0].stages)
    assert any(isinstance(s, RandomPhotometric) for s in pirl.jigsaw.stages)


def test_randaugment_runs_every_op():
    ra = RandAugment(1, 10, 0.5)
    x = render(torch.arange(15), 16).float() / 255
    u = torch.rand(15, ra.n, generator=torch.Generator().manual_seed(0))
    u[:, 0] = (torch.arange(15) + 0.5) / 15  # op k for sample k
    u[:, 1] = 0.0  # always applied
    y = ra(x, u)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.min() >= -1e-4 and y.max() <= 1 + 1e-4
    changed = [(y[k] - x[k]).abs().max() > 1e-3 for k in range(15)]
    assert sum(changed) >= 13  # (Solarize at m=10 barely changes an image, as in timm)


def _write_folder(root):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            os.makedirs(os.path.join(root, split, c))
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(
                    os.path.join(root, split, c, f"{i}.png"))
    with open(os.path.join(root, "train", "a", "1.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")  # corrupt
    open(os.path.join(root, "train", "b", "2.png"), "wb").close()  # empty file


@pytest.mark.parametrize("decode", ["pil", "torchvision"])
def test_image_folder_skips_and_counts_corrupt_images(tmp_path, decode):
    _write_folder(str(tmp_path))
    ds = build_dataset(str(tmp_path), "train", image_size=16, decode=decode)
    assert len(ds) == 6 and ds.classes == ["a", "b"]
    with pytest.raises(Exception):
        ds[1]  # the plain dataset raises, as torchvision's would
    items = SkipUnreadable(ds).__getitems__(list(range(6)))
    batch = collate(items)
    assert batch["skipped"] == 2
    assert batch["index"].tolist() == [0, 2, 2, 3, 4, 0]  # 1 -> 2, 5 (empty) -> wraps to 0
    assert isinstance(batch["images"], list)  # sizes differ: the crop handles them one by one
    assert min(im.shape[-2] for im in batch["images"]) == round(16 * 256 / 224)
    assert len(build_dataset(str(tmp_path), "test", image_size=16)) == 6


def test_torchvision_decode_gives_the_pil_pixels(tmp_path):
    """--data-decode torchvision (torchvision.io, benchmarks/run.py decode_imagefolder) reads the pixels PIL
    reads: PNG exactly, JPEG within the decoders' IDCT rounding."""
    rng = np.random.default_rng(1)
    os.makedirs(tmp_path / "c")
    smooth = np.kron(rng.integers(0, 255, (8, 10, 3)), np.ones((12, 12, 1))).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "c" / "0.jpg", quality=90)
    Image.fromarray(smooth).save(tmp_path / "c" / "1.png")
    Image.fromarray(smooth).convert("L").save(tmp_path / "c" / "2.jpg")  # grayscale: RGB out, as PIL's convert
    pil = build_dataset(str(tmp_path), "train", image_size=64)
    tv = build_dataset(str(tmp_path), "train", image_size=64, decode="torchvision")
    for i in range(3):
        a, b = pil[i][0], tv[i][0]
        assert a.shape == b.shape == (3, round(64 * 256 / 224), round(64 * 256 / 224) * 10 // 8)
        diff = (a.int() - b.int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 8, (i, diff.float().mean(), diff.max())
    assert torch.equal(pil[1][0], tv[1][0])
    with pytest.raises(ValueError, match="decode must be one of"):
        build_dataset(str(tmp_path), "train", decode="cv2")


def test_build_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not 'synthetic'"):
        build_dataset(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="split"):
        build_dataset("synthetic", "validation")
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        build_views("simclr2", 32)


def test_hf_datasets_spec_with_a_stand_in_module(monkeypatch):
    """`hf:NAME` goes through datasets.load_dataset; a stand-in module checks the split mapping and columns."""
    import sys
    import types
    calls = []

    class FakeSplit(list):
        column_names = ["img", "label"]

        def __getitem__(self, key):
            if key == "label":
                return [row["label"] for row in self]
            return list.__getitem__(self, key)

    def load_dataset(name, split):
        calls.append((name, split))
        rows = [{"img": Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)), "label": i % 2} for i in range(4)]
        return FakeSplit(rows)

    fake = types.SimpleNamespace(load_dataset=load_dataset, get_dataset_split_names=lambda name: ["train", "test"])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    train = build_dataset("hf:user/shapes", "train", image_size=16)
    test = build_dataset("hf:user/shapes", "test", image_size=16)
    assert calls == [("user/shapes", "train"), ("user/shapes", "test")]
    x, y = test[3]
    assert x.dtype == torch.uint8 and min(x.shape[1:]) == round(16 * 256 / 224) and y == 1
    assert train.targets.tolist() == [0, 1, 0, 1]


def test_synthetic_nuisance_targets_name_the_rendered_colours():
    """`target="fg_colour"` / `"bg_colour"` label an image with the RGB octant of its shape's / background's
    colour: read back from the pixels at a filled shape's centre (circles) and at the image's corner."""
    from training.data.synthetic import OCTANTS, _params, labels
    n, S = 1000, 64
    idx = torch.arange(n)
    img = render(idx, S).float() / 255
    p = _params(idx, 0, 0, 10)
    octant = lambda c: (c[:, 0] > 0.5).long() * 4 + (c[:, 1] > 0.5).long() * 2 + (c[:, 2] > 0.5).long()  # noqa: E731
    fg, bg = labels(idx, target="fg_colour"), labels(idx, target="bg_colour")
    assert torch.equal(labels(idx), labels(idx, target="shape")) and fg.max() < len(OCTANTS)
    col, row = (((p["centre"] + 1) / 2 * (S - 1)).round().long()).unbind(1)
    centre = img[idx, :, row, col]
    circles = (labels(idx) == 0) & ((p["fg"] - 0.5).abs() > 0.2).all(1)  # a colour clearly inside its octant
    assert circles.sum() > 10
    assert (octant(centre)[circles] == fg[circles]).float().mean() > 0.8  # fine noise, anti-aliasing
    assert (octant(centre)[circles] == bg[circles]).float().mean() < 0.4
    corner = img[:, :, :2, :2].mean((2, 3))
    clear = ((p["bg1"] - 0.5).abs() > 0.2).all(1)  # the texture moves the background by up to 0.15
    assert (octant(corner)[clear] == bg[clear]).float().mean() > 0.97
    ds = SyntheticShapes("test", 16, num_samples=50, target="bg_colour")
    assert ds.classes == list(OCTANTS) and torch.equal(ds.targets, labels(torch.arange(50), split="test", target="bg_colour"))
    assert [y for _, y in ds.__getitems__([3, 7])] == ds.targets[[3, 7]].tolist()
    with pytest.raises(ValueError, match="bg_colour"):
        SyntheticShapes("train", 16, num_samples=5, target="colour")
