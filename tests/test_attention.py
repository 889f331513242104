"""Attention maps: equal to a by-hand computation from the last block's qkv and to timm's AttentionExtract on
an unfused copy; the model's own head count; nothing global changed; masks keep the stated mass."""
import copy
import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.utils import AttentionExtract

import clzoo
from clzoo.attention import attention_maps, attention_masks, attention_rollout
from clzoo.cli import main as cli_main


def small_vit(**kw):
    torch.manual_seed(0)
    kw.setdefault("img_size", 32)
    return clzoo.create_model("vit_tiny_patch16_224", depth=3, qkv_bias=True, **kw).eval()


def manual_last_block_attention(vit, x):
    """The last block's softmax attention, (B, heads, N, N), with every step written out."""
    with torch.no_grad():
        t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        for blk in vit.blocks[:-1]:
            t = blk(t)
        last = vit.blocks[-1]
        y = torch.nn.functional.layer_norm(t, (t.shape[-1],), last.norm1.weight, last.norm1.bias, last.norm1.eps)
        qkv = y @ last.attn.qkv.weight.T + last.attn.qkv.bias
        C = t.shape[-1]
        heads = last.attn.num_heads
        d = C // heads
        out = []
        for h in range(heads):
            q = qkv[..., h * d:(h + 1) * d]
            k = qkv[..., C + h * d:C + (h + 1) * d]
            out.append(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1))
        return torch.stack(out, dim=1)


def unfused_attention(vit, x):
    """timm's AttentionExtract (fx) on a copy whose attention is unfused: every block's softmax."""
    ref = copy.deepcopy(vit)
    for blk in ref.blocks:
        blk.attn.fused_attn = False
    with torch.no_grad():
        return list(AttentionExtract(ref, method="fx")(x).values())


def test_maps_equal_manual_qkv_computation_with_fused_attention():
    vit = small_vit()
    assert all(blk.attn.fused_attn for blk in vit.blocks)  # the default path has no softmax to hook
    x = torch.randn(2, 3, 32, 32)
    maps = attention_maps(vit, x)
    assert maps.shape == (2, 3, 2, 2)
    manual = manual_last_block_attention(vit, x)
    torch.testing.assert_close(maps, manual[:, :, 0, 1:].reshape(2, 3, 2, 2))
    torch.testing.assert_close(maps, unfused_attention(vit, x)[-1][:, :, 0, 1:].reshape(2, 3, 2, 2))


def test_non_square_input_keeps_row_major_grid():
    vit = small_vit(dynamic_img_size=True)
    x = torch.randn(1, 3, 32, 64)  # 2 x 4 patches
    maps = attention_maps(vit, x)
    assert maps.shape == (1, 3, 2, 4)
    expected = unfused_attention(vit, x)[-1][:, :, 0, 1:].reshape(1, 3, 2, 4)
    torch.testing.assert_close(maps, expected)


def test_nothing_global_changes():
    vit = small_vit().train()
    vit.blocks[0].attn.fused_attn = False  # a mixed setting must survive as it is
    flags = [blk.attn.fused_attn for blk in vit.blocks]
    timm_default = timm.layers.use_fused_attn()
    hooks = [len(blk._forward_pre_hooks) for blk in vit.blocks]
    x = torch.randn(1, 3, 32, 32)
    a = attention_maps(vit, x)
    attention_rollout(vit, x)
    assert [blk.attn.fused_attn for blk in vit.blocks] == flags
    assert timm.layers.use_fused_attn() == timm_default
    assert [len(blk._forward_pre_hooks) for blk in vit.blocks] == hooks
    assert vit.training and all(m.training for m in vit.modules())
    assert torch.is_grad_enabled()
    torch.testing.assert_close(attention_maps(vit.eval(), x), a)  # it ran in eval mode


@pytest.mark.parametrize("name,heads", [("mocov3_vits16", 12), ("dino_vits16", 6), ("dino_vits8", 6)])
def test_maps_use_the_model_head_count(name, heads):
    model = clzoo.create_model(name, img_size=32, depth=2).eval()
    patch = model.patch_embed.patch_size[0]
    maps = attention_maps(model, torch.randn(1, 3, 32, 32))
    assert maps.shape == (1, heads, 32 // patch, 32 // patch)
    # each head's map is a softmax row without its [CLS] entry: positive, sums below 1
    assert (maps > 0).all() and (maps.sum((-2, -1)) < 1).all()


def test_rollout_equals_product_of_residual_attention():
    vit = small_vit()
    x = torch.randn(2, 3, 32, 32)
    layers = unfused_attention(vit, x)
    eye = torch.eye(layers[0].shape[-1])
    expected = torch.eye(layers[0].shape[-1]).expand(2, -1, -1)
    for a in layers:
        expected = (0.5 * a.mean(1) + 0.5 * eye) @ expected
    torch.testing.assert_close(attention_rollout(vit, x), expected[:, 0, 1:].reshape(2, 2, 2))


def test_masks_keep_the_stated_mass():
    m = torch.tensor([[0.5, 0.3], [0.15, 0.05]]) * 7  # unnormalised on purpose
    assert attention_masks(m, 0.7).tolist() == [[True, True], [False, False]]
    assert attention_masks(m, 0.9).tolist() == [[True, True], [True, False]]
    assert attention_masks(m, 0.2).tolist() == [[True, False], [False, False]]
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 4, 7, 9, generator=g) ** 3
    for mass in (0.1, 0.6, 0.95):
        masks = attention_masks(maps, mass)
        assert masks.shape == maps.shape
        flat, keep = maps.flatten(-2), masks.flatten(-2)
        total = flat.sum(-1)
        kept = (flat * keep).sum(-1)
        smallest_kept = torch.where(keep, flat, torch.inf).min(-1).values
        largest_dropped = torch.where(keep, -torch.inf, flat).max(-1).values
        assert (kept >= mass * total - 1e-5).all()  # enough mass ...
        assert (kept - smallest_kept < mass * total).all()  # ... with no patch to spare
        assert (smallest_kept >= largest_dropped).all()  # and the highest patches
    with pytest.raises(ValueError):
        attention_masks(maps, 0.0)


def test_errors_on_non_vit():
    with pytest.raises(TypeError, match="VisionTransformer"):
        attention_maps(clzoo.create_model("resnet18"), torch.randn(1, 3, 32, 32))


def test_cli_attention_png(tmp_path, capsys):
    img = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(img)
    weights = tmp_path / "vit.safetensors"
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    out = tmp_path / "maps.png"
    assert cli_main(["attention", "--model", "vit_tiny_patch16_224", "--weights", str(weights), "--img-size", "32",
                     "--image", str(img), "--out", str(out), "--rollout", "--mass", "0.5"]) == 0
    assert "3 heads, 2x2 patches" in capsys.readouterr().out
    with Image.open(out) as png:  # image, 3 heads, mean, mask, rollout
        assert png.format == "PNG" and png.width > 600 and png.height > 200
    assert cli_main(["attention", "--model", "mocov3_vits16", "--random-init", "--image", str(img),
                     "--out", str(tmp_path / "m.png"), "--image-size", "48"]) == 0
    assert "12 heads, 3x3 patches" in capsys.readouterr().out
    assert cli_main(["attention", "--model", "resnet18", "--random-init", "--image", str(img),
                     "--out", str(tmp_path / "r.png")]) == 2
