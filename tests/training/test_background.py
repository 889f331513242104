"""Foreground masks and the background stages (training/data/background.py) on hand-made and rendered images."""

import os

import numpy as np
import pytest
import torch

from training import pretrain
from training.data import build_dataset
from training.data.background import GREY, Background, partners, with_partners
from training.data.synthetic import SyntheticShapes, render
from training.data.transforms import build_views


def _image(fg, bg, mask):
    """(C=4, H, W) uint8: colour fg where mask is 255, bg where 0, the blend in between; mask as channel 3."""
    m = torch.tensor(mask, dtype=torch.float32)[None] / 255
    rgb = torch.tensor(fg, dtype=torch.float32).view(3, 1, 1) * m + torch.tensor(bg, dtype=torch.float32).view(3, 1, 1) * (1 - m)
    return torch.cat([rgb.round(), m * 255]).to(torch.uint8)


MASK_A = [[255, 0], [0, 51]]  # one foreground pixel, two background pixels, one edge pixel at 20 %
MASK_B = [[0, 255], [0, 0]]


def test_synthetic_masks_are_the_shape_and_leave_the_rgb_unchanged():
    idx = torch.arange(8)
    plain, masked = render(idx, 32), render(idx, 32, with_mask=True)
    assert masked.shape == (8, 4, 32, 32) and torch.equal(masked[:, :3], plain)
    for img in masked:
        inside, outside = img[3] == 255, img[3] == 0
        assert inside.sum() > 20 and outside.sum() > 20
        colours = img[:3, inside].T.unique(dim=0)  # full coverage: exactly the shape's one colour
        assert len(colours) == 1
        assert not (img[:3, outside].T == colours[0]).all(1).any()  # the background never takes it
    ds = SyntheticShapes("train", 32, num_samples=8, with_masks=True)
    assert torch.equal(ds.masks(idx), masked[:, 3:]) and torch.equal(SyntheticShapes("train", 32, num_samples=8).masks(idx), masked[:, 3:])
    x, _ = ds[3]
    assert torch.equal(x, masked[3])


def test_remove_puts_the_fill_behind_the_foreground_and_blends_the_edge():
    a = _image((200, 10, 10), (10, 10, 200), MASK_A)[None]
    out = Background("remove", p=1.0, fill=(100, 50, 0))(a, torch.tensor([0]), 1, 0, 0)[0]
    fill = torch.tensor([100.0, 50.0, 0.0])
    assert torch.equal(out[:, 0, 0], a[0, :3, 0, 0].float())  # foreground kept
    assert torch.equal(out[:, 0, 1], fill) and torch.equal(out[:, 1, 0], fill)
    edge = a[0, :3, 1, 1].float() * 0.2 + fill * 0.8
    assert torch.allclose(out[:, 1, 1], edge, atol=1e-4)


def test_random_uses_the_partners_background_with_its_foreground_filled():
    a = _image((200, 10, 10), (10, 10, 200), MASK_A)
    b = _image((0, 255, 0), (250, 250, 0), MASK_B)  # B's background is flat yellow; its shape is green
    x = torch.cat([a, b])[None]
    out = Background("random", p=1.0)(x, torch.tensor([0]), 1, 0, 0)[0]
    yellow = torch.tensor([250.0, 250.0, 0.0])
    assert torch.equal(out[:, 0, 0], a[:3, 0, 0].float())
    assert torch.equal(out[:, 0, 1], yellow)  # B's green shape there is filled with B's mean background
    assert torch.equal(out[:, 1, 0], yellow)
    assert torch.allclose(out[:, 1, 1], a[:3, 1, 1].float() * 0.2 + yellow * 0.8, atol=1e-4)
    assert not torch.equal(out, a[:3].float())


def test_swap_changes_only_the_views_after_the_first_and_p_is_the_rate():
    n = 2000
    x = torch.cat([_image((200, 10, 10), (10, 10, 200), MASK_A), _image((0, 255, 0), (250, 250, 0), MASK_B)])
    x = x[None].expand(n, -1, -1, -1)
    idx = torch.arange(n)
    swap = Background("swap", p=1.0)
    assert torch.equal(swap(x, idx, 0, 0, 0), x[:, :3].float())
    assert not torch.equal(swap(x, idx, 1, 0, 0)[:, :, 0, 1], x[:, :3, 0, 1].float())
    stage = Background("random", p=0.3)
    changed = (stage(x, idx, 1, 0, 0) != x[:, :3].float()).flatten(1).any(1).float()
    assert abs(changed.mean().item() - 0.3) < 3 * (0.3 * 0.7 / n) ** 0.5
    # per-sample draws: the same sample in another batch gets the same draw; another view or epoch differs
    assert torch.equal(stage(x[:5], idx[:5], 1, 0, 0), stage(x, idx, 1, 0, 0)[:5])
    assert not torch.equal(stage(x, idx, 2, 0, 0), stage(x, idx, 1, 0, 0))
    assert not torch.equal(stage(x, idx, 1, 0, 1), stage(x, idx, 1, 0, 0))


def test_partners_are_other_images_drawn_per_sample_and_epoch():
    idx = torch.arange(1000)
    j = partners(idx, 1000, seed=0, epoch=0)
    assert (j != idx).all() and j.min() >= 0 and j.max() < 1000
    assert len(j.unique()) > 550  # ~63 % of 1000 for uniform draws
    assert torch.equal(partners(idx[[7, 3]], 1000, 0, 0), j[[7, 3]])  # independent of the batch
    assert (partners(idx, 1000, 0, 1) != j).float().mean() > 0.9
    ds = with_partners(SyntheticShapes("train", 16, num_samples=50, with_masks=True), seed=0)
    ds.epoch = 2
    x, _ = ds[5]
    k = int(partners(torch.tensor([5]), 50, 0, 2)[0])
    assert torch.equal(x[4:], render(torch.tensor([k]), 16, with_mask=True)[0])


def test_views_with_a_background_stage_differ_from_plain_views_only_where_drawn():
    ds = with_partners(SyntheticShapes("train", 32, num_samples=64, with_masks=True), seed=0)
    x = torch.stack([it[0] for it in ds.__getitems__(list(range(64)))])
    idx = torch.arange(64)
    plain = build_views("mocov2", 32, seed=0)(x[:, :3], idx, 0)["views"]
    bg = build_views("mocov2", 32, seed=0, background="swap", background_p=0.5)(x, idx, 0)["views"]
    assert torch.equal(bg[0], plain[0])  # swap keeps view 0's background
    drawn = Background("swap", 0.5)(x, idx, 1, 0, 0) != x[:, :3].float()
    differs = (bg[1] != plain[1]).flatten(1).any(1)
    assert torch.equal(differs, drawn.flatten(1).any(1)) and 10 < differs.sum() < 54


def test_a_missing_mask_says_which_and_the_channels_are_checked(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for c in ("a", "b"):
        os.makedirs(tmp_path / "img" / c)
        os.makedirs(tmp_path / "masks" / c)
        for k in range(2):
            Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(tmp_path / "img" / c / f"{k}.jpg")
            m = np.zeros((10, 15), np.uint8)
            m[:5] = 255
            Image.fromarray(m).save(tmp_path / "masks" / c / f"{k}.png")
    ds = build_dataset(str(tmp_path / "img"), image_size=16, masks=str(tmp_path / "masks"))
    x, _ = ds[0]
    assert x.shape[0] == 4 and x.shape[1:] == ds._image(0)[0].shape[1:]
    assert x[3, 0].float().mean() > 250 and x[3, -1].float().mean() < 5  # the mask resized with the image
    os.remove(tmp_path / "masks" / "b" / "1.png")
    with pytest.raises(FileNotFoundError, match=r"b/1\.png"):
        ds[3]
    with pytest.raises(ValueError, match="needs images with 8 channels"):
        Background("random")(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), torch.arange(2), 1, 0, 0)
    with pytest.raises(ValueError, match="one of"):
        Background("erase")


def test_trainer_asks_for_masks_and_runs_with_the_synthetic_ones(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    os.makedirs(tmp_path / "img" / "a")
    for k in range(4):
        Image.fromarray(np.full((16, 16, 3), 60 * k, np.uint8)).save(tmp_path / "img" / "a" / f"{k}.png")
    common = ["--model", "test_resnet", "--image-size", "16", "--batch-size", "32", "--epochs", "1",
              "--mixed-precision", "no", "--knn.every", "0"]
    assert pretrain.main(["--method", "simclr", *common, "--data", str(tmp_path / "img"), "--batch-size", "2",
                          "--aug.background", "remove", "--output", str(tmp_path / "r0")]) != 0
    assert "needs foreground masks" in capsys.readouterr().err
    out = str(tmp_path / "r1")
    assert pretrain.main(["--method", "simclr", *common, "--data-args.num_samples", "64", "--aug.background",
                          "swap", "--aug.background_p", "1.0", "--output", out]) == 0
    assert os.path.exists(os.path.join(out, "model.safetensors"))
    assert GREY == (124.0, 116.0, 104.0)


def test_bg_swaps_hard_negative_is_the_partners_foreground_on_the_own_background():
    from training.data.background import hard_negative
    a = _image((200, 10, 10), (10, 10, 200), MASK_A)  # own: red shape on blue
    b = _image((0, 255, 0), (250, 250, 0), MASK_B)    # partner: green shape at (0, 1)
    out = hard_negative(torch.cat([a, b])[None])[0]
    blue = torch.tensor([10.0, 10.0, 200.0])
    assert torch.equal(out[:, 0, 1], torch.tensor([0.0, 255.0, 0.0]))  # the partner's foreground
    assert torch.equal(out[:, 1, 0], blue)  # the own background stays
    # the own shape is gone, filled with the own background's mean, weighted by 1 - mask (the 20 % edge pixel too)
    edge = a[:3, 1, 1].float()
    torch.testing.assert_close(out[:, 0, 0], (2 * blue + 0.8 * edge) / 2.8)
    views = build_views("mocov2", 2, seed=0, background="swap", background_p=1.0, background_negative=True)
    batch = views(torch.cat([a, b])[None].expand(4, -1, -1, -1), torch.arange(4), 0)
    assert batch["bg_negative"].shape == batch["views"][1].shape
    with pytest.raises(ValueError, match="needs aug.background swap"):
        build_views("mocov2", 2, background="random", background_negative=True)
    with pytest.raises(ValueError, match="needs aug.background swap"):
        build_views("mocov2", 2, background_negative=True)


def test_moco_scores_the_hard_negative_as_one_more_negative(tmp_path):
    import math
    from training.modules.losses import info_nce
    g = torch.Generator().manual_seed(0)
    q, k, hard = (torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1) for _ in range(3))
    queue = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    tau, total = 0.2, 0.0
    for b in range(3):
        logits = [float(q[b] @ k[b]), float(q[b] @ hard[b])] + [float(q[b] @ n) for n in queue]
        total += -logits[0] / tau + math.log(sum(math.exp(v / tau) for v in logits))
    assert info_nce(q, k, queue, tau, hard).item() == pytest.approx(total / 3, rel=1e-5)
    assert info_nce(q, k, queue, tau, hard) > info_nce(q, k, queue, tau)
    out = str(tmp_path / "moco")
    assert pretrain.main(["--method", "mocov2", "--model", "test_resnet", "--image-size", "16", "--batch-size", "32",
                          "--epochs", "1", "--data-args.num_samples", "64", "--hparams.K", "64", "--mixed-precision",
                          "no", "--knn.every", "0", "--aug.background", "swap", "--aug.background_negative", "true",
                          "--output", out]) == 0
