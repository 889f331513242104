"""CPC v1 / v2 (training/methods/cpc.py, cpcv2.py, modules/cpc.py): the patch grid, the causal context, the
InfoNCE over the batch's patches written out by hand, the prediction directions, CPC v2's patch augmentation,
and runs from the CLI whose exports load. 1 vs 2 processes is test_train_invariance.py."""

import math

import pytest
import torch
import torch.nn as nn

import clzoo
from training import pretrain
from training.methods import TrainInfo, build_method
from training.methods.cpc import CPC
from training.methods.cpcv2 import CPCv2
from training.modules.cpc import DIRECTIONS, RowContext, augment_patches, cpc_infonce

INFO = TrainInfo(num_samples=16, total_steps=10, steps_per_epoch=5, global_batch=2, seed=0)


def test_patch_grid_and_default_sizes():
    enc = clzoo.create_model("cpc_encoder", base="resnet18", base_args={"channels": [8, 16, 32, 64]}, patch=8,
                             stride=4)
    x = torch.randn(2, 3, 32, 32)
    p = enc.patches(x)
    assert p.shape == (2, 7, 7, 3, 8, 8)
    assert torch.equal(p[1, 2, 5], x[1, :, 8:16, 20:28])  # row 2, column 5: pixels 4*2.., 4*5..
    with torch.no_grad():
        grid = enc.eval().forward_features(x)
        assert grid.shape == (2, 64, 7, 7)
        # each cell is the trunk's mean-pooled feature of its own patch
        torch.testing.assert_close(grid[1, :, 2, 5], enc.trunk(x[1:2, :, 8:16, 20:28])[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(enc(x), grid.mean((2, 3)))
    assert CPC.encoder_spec("resnet18", {}, image_size=32) == (
        "cpc_encoder", {"base": "resnet18", "base_args": {}, "patch": 8, "stride": 4})  # 7 x 7, as 64 / 32 of 256
    name, args = CPCv2.encoder_spec("resnet18", {"channels": [8, 16, 32, 64]}, image_size=240)
    assert (args["patch"], args["stride"]) == (80, 32) and args["base_args"]["norm_layer"] == "groupnorm1"
    assert CPCv2.encoder_spec("resnet18", {}, image_size=32)[1]["patch"] == 11  # 6 x 6 at stride 4
    with pytest.raises(ValueError, match="cpc needs a patch encoder"):
        build_method("cpc", clzoo.create_model("test_resnet", num_classes=0), INFO)


def test_context_is_causal_over_rows():
    torch.manual_seed(0)
    ctx = RowContext(6, 4, blocks=3).eval()
    z = torch.randn(2, 6, 7, 7)
    for r in range(1, 7):
        z2 = z.clone()
        z2[:, :, r:] = torch.randn_like(z2[:, :, r:])  # the rows that rows < r predict
        c, c2 = ctx(z), ctx(z2)
        assert torch.equal(c[:, :, :r], c2[:, :, :r])  # the context of rows < r does not see them
        assert (c[:, :, r] - c2[:, :, r]).abs().max() > 1e-3  # row r's own context does


def test_directions_are_views_of_the_grid():
    g = torch.arange(9.).view(1, 1, 3, 3)
    assert DIRECTIONS["down"](g)[0, 0, 0].tolist() == [0, 1, 2]   # context from the top row down
    assert DIRECTIONS["up"](g)[0, 0, 0].tolist() == [6, 7, 8]     # from the bottom row up
    assert DIRECTIONS["right"](g)[0, 0, 0].tolist() == [0, 3, 6]  # from the left column rightwards
    assert DIRECTIONS["left"](g)[0, 0, 0].tolist() == [2, 5, 8]   # from the right column leftwards


def test_infonce_by_hand():
    """B 2 images, a 3 x 2 grid, D 2, W_1 = identity, W_2 = 2 I: each prediction from (b, i, j) is scored
    against all 12 patches of the batch, the true one (b, i + k, j) the target."""
    g = torch.Generator().manual_seed(0)
    z, c = torch.randn(2, 2, 3, 2, generator=g), torch.randn(2, 2, 3, 2, generator=g)
    preds = nn.ModuleList(nn.Conv2d(2, 2, 1, bias=False) for _ in range(2))
    with torch.no_grad():
        preds[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        preds[1].weight.copy_(2 * torch.eye(2).view(2, 2, 1, 1))
    with torch.no_grad():
        loss, terms = cpc_infonce(c, z, preds)
    cells = [(b, i, j) for b in range(2) for i in range(3) for j in range(2)]
    for k, term in zip((1, 2), terms):
        total, n = 0.0, 0
        for b, i, j in cells:
            if i + k >= 3:
                continue
            pred = [k * float(c[b, d, i, j]) for d in range(2)]
            logits = [sum(pred[d] * float(z[bb, d, ii, jj]) for d in range(2)) for bb, ii, jj in cells]
            total += -logits[cells.index((b, i + k, j))] + math.log(sum(math.exp(v) for v in logits))
            n += 1
        assert float(term) == pytest.approx(total / n, rel=1e-5)
    assert float(loss) == pytest.approx((float(terms[0]) + float(terms[1])) / 2, rel=1e-6)


def test_patch_augmentation():
    x = torch.rand(1, 2, 2, 3, 8, 8)
    u = torch.zeros(1, 4 * 6)
    u.view(4, 6)[:, 2] = 0.9  # no flip
    u.view(4, 6)[:, 4] = 0.9  # no colour drop
    torch.testing.assert_close(augment_patches(x, u, crop=1.0), x, atol=1e-6, rtol=1e-6)  # the full window
    flip = u.clone()
    flip.view(4, 6)[1, 2] = 0.1  # patch (0, 1) flipped
    out = augment_patches(x, flip, crop=1.0)
    torch.testing.assert_close(out[0, 0, 1], x[0, 0, 1].flip(2), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[0, 1, 0], x[0, 1, 0], atol=1e-6, rtol=1e-6)
    drop = u.clone()
    drop.view(4, 6)[3, 4], drop.view(4, 6)[3, 3] = 0.1, 0.5  # patch (1, 1): keep channel 1 only
    out = augment_patches(x, drop, crop=1.0)
    assert torch.equal(out[0, 1, 1, 0], torch.zeros(8, 8)) and torch.equal(out[0, 1, 1, 2], torch.zeros(8, 8))
    torch.testing.assert_close(out[0, 1, 1, 1], x[0, 1, 1, 1], atol=1e-6, rtol=1e-6)
    shifted = u.clone()
    shifted.view(4, 6)[:, 0] = 1.0  # the window at the right edge: a translation to the left
    assert (augment_patches(x, shifted, crop=0.5) - x).abs().max() > 0.1


@pytest.mark.parametrize("method, grid, directions", [("cpc", 7, ["down"]), ("cpcv2", 6, ["down", "up"])])
def test_cpc_runs_from_the_cli_and_its_export_loads(tmp_path, method, grid, directions):
    out = tmp_path / method
    assert pretrain.main(["--method", method, "--model", "resnet18", "--model-args", '{"channels": [8,16,32,64]}',
                          "--image-size", "32", "--batch-size", "8", "--max-steps", "2", "--data-args.num_samples",
                          "16", "--knn.every", "0", "--output", str(out)]) == 0
    with open(out / "metrics.jsonl") as f:
        first = f.readline()
    assert all(f'"loss_{d}"' in first for d in directions)
    model = clzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert type(model).__name__ == "CPCEncoder" and model.num_features == 64
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 64, grid, grid)
    assert (type(model.trunk.bn1).__name__ == "GroupNorm1") == (method == "cpcv2")
