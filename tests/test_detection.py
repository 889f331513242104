"""Detection / segmentation export (clzoo/detection.py, `clzoo export`): key layouts against the frameworks'
own ResNet-50 key lists (tests/data/detection/, written by gen_keys.py from detectron2's and mmdet's code), the
torchvision file in torchvision's own class, and a torchvision Faster R-CNN on clzoo backbones."""

import os
import pickle
import pickletools

import numpy as np
import pytest
import timm
import torch
import torchvision

import clzoo
from clzoo.cli import main as cli_main
from clzoo.detection import detection_backbone, export_backbone

DATA = os.path.join(os.path.dirname(__file__), "data", "detection")


def _keys(name, arch="resnet50"):
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(DATA, f"{name}_{arch}_keys.txt"))
            if not line.startswith("#")]
    return {k: tuple(int(d) for d in shape.strip("()").split(",") if d.strip()) for k, shape in rows}


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    model = timm.create_model("resnet50", num_classes=0).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a mix-up of running_mean / var would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_detectron2_pkl_has_detectron2s_resnet50_keys_and_no_code(resnet50, tmp_path):
    out = export_backbone(resnet50, "detectron2", str(tmp_path / "r50.pkl"))
    raw = open(out, "rb").read()
    modules = {arg.split()[0] for op, arg, _ in pickletools.genops(raw) if op.name in ("GLOBAL", "STACK_GLOBAL") and arg}
    assert all(m.startswith("numpy") for m in modules), modules  # numpy arrays only: no torch class to import
    obj = pickle.loads(raw)
    assert obj["matching_heuristics"] is True and set(obj) == {"model", "__author__", "matching_heuristics"}
    expected = _keys("detectron2")  # FrozenBatchNorm: no num_batches_tracked
    got = {k: tuple(v.shape) for k, v in obj["model"].items() if not k.endswith("num_batches_tracked")}
    assert got == expected
    sd = resnet50.state_dict()
    np.testing.assert_array_equal(obj["model"]["res3.0.shortcut.norm.running_var"], sd["layer2.0.downsample.1.running_var"].numpy())
    np.testing.assert_array_equal(obj["model"]["stem.conv1.norm.weight"], sd["bn1.weight"].numpy())


def test_mmdet_checkpoint_has_mmdets_resnet50_keys(resnet50, tmp_path):
    out = export_backbone(resnet50, "mmdet", str(tmp_path / "r50.pth"))
    ckpt = torch.load(out, weights_only=True)
    assert all(k.startswith("backbone.") for k in ckpt["state_dict"])
    got = {k.removeprefix("backbone."): tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    assert got == _keys("mmdet")


def test_mmseg_checkpoint_of_a_vit_has_mmsegs_vision_transformer_keys(tmp_path):
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", num_classes=0)
    ckpt = torch.load(export_backbone(vit, "mmdet", str(tmp_path / "vit.pth")), weights_only=True)
    got = {k.removeprefix("backbone."): tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    assert got == _keys("mmseg", "vit_small")
    sd = vit.state_dict()  # torch MultiheadAttention's in_proj is timm's qkv: q, k, v stacked in the same order
    assert torch.equal(ckpt["state_dict"]["backbone.layers.3.attn.attn.in_proj_weight"], sd["blocks.3.attn.qkv.weight"])
    assert torch.equal(ckpt["state_dict"]["backbone.ln1.bias"], sd["norm.bias"])
    with pytest.raises(TypeError, match="plain timm ViT"):
        export_backbone(timm.create_model("vit_small_patch14_reg4_dinov2", num_classes=0, img_size=56), "mmdet",
                        str(tmp_path / "reg.pth"))


def test_torchvision_file_loads_into_torchvisions_resnet50_and_computes_the_same(resnet50, tmp_path):
    out = export_backbone(resnet50, "torchvision", str(tmp_path / "r50_tv.pth"))
    tv = torchvision.models.resnet50()
    missing, unexpected = tv.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    tv.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), resnet50(x), rtol=1e-4, atol=1e-5)


def test_export_refuses_what_has_no_counterpart(tmp_path):
    with pytest.raises(TypeError, match="takes a ResNet"):
        export_backbone(timm.create_model("vit_tiny_patch16_224", num_classes=0), "detectron2", str(tmp_path / "v.pkl"))
    with pytest.raises(TypeError, match="deep-stem"):
        export_backbone(timm.create_model("resnet18d", num_classes=0), "torchvision", str(tmp_path / "d.pth"))
    with pytest.raises(ValueError, match="must be one of"):
        export_backbone(timm.create_model("resnet18", num_classes=0), "caffe", str(tmp_path / "c"))


def test_cli_export_from_a_local_weight_file(tmp_path, capsys):
    torch.manual_seed(1)
    model = timm.create_model("resnet18", num_classes=0)
    weights = tmp_path / "r18.pth"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "r18.pkl"
    assert cli_main(["export", "resnet18", "--to", "detectron2", "--weights", str(weights), "--output", str(out)]) == 0
    obj = pickle.load(open(out, "rb"))
    np.testing.assert_array_equal(obj["model"]["res5.1.conv2.weight"], model.state_dict()["layer4.1.conv2.weight"].numpy())
    vit = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), vit)
    assert cli_main(["export", "vit_tiny_patch16_224", "--to", "torchvision", "--weights", str(vit), "--output",
                     str(tmp_path / "v.pth")]) == 2
    assert "takes a ResNet" in capsys.readouterr().err


def _detector_step(backbone):
    from torchvision.models.detection import FasterRCNN
    det = FasterRCNN(backbone, num_classes=3, min_size=96, max_size=96)
    images = [torch.rand(3, 96, 96) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 5.0, 90.0, 50.0], [0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([2, 1])}]
    det.train()
    losses = det(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    opt = torch.optim.SGD([p for p in det.parameters() if p.requires_grad], lr=0.01)
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in det.named_parameters()}
    opt.step()
    det.eval()
    with torch.no_grad():
        out = det(images)
    assert len(out) == 2 and {"boxes", "labels", "scores"} <= set(out[0])
    return det, grads


def test_faster_rcnn_trains_and_evaluates_on_a_clzoo_resnet(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0)
    weights = tmp_path / "r18.pth"
    torch.save(model.state_dict(), weights)
    backbone = detection_backbone("resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
    assert backbone.out_channels == 256
    torch.testing.assert_close(backbone.body.layer3[0].conv1.weight, model.layer3[0].conv1.weight)  # the file's
    det, grads = _detector_step(backbone)
    assert grads["backbone.body.layer1.0.conv1.weight"] is None  # frozen, as resnet_fpn_backbone(trainable_layers=3)
    # (timm zero-inits each block's last BN, frozen here: the shortcut convs carry the gradient at init)
    assert grads["backbone.body.layer2.0.downsample.0.weight"].abs().sum() > 0
    assert grads["backbone.body.layer4.0.downsample.0.weight"].abs().sum() > 0
    bn = det.backbone.body.bn1
    assert type(bn).__name__ == "FrozenBatchNorm2d"


def test_faster_rcnn_on_a_vit_pyramid_and_renormalisation():
    torch.manual_seed(0)
    backbone = detection_backbone("vit_tiny_patch16_224", pretrained=False, img_size=96, out_channels=64)
    feats = backbone(torch.rand(1, 3, 96, 96))
    assert list(feats) == ["0", "1", "2", "3", "pool"] and [f.shape[-1] for f in feats.values()] == [24, 12, 6, 3, 2]
    _detector_step(backbone)
    # an encoder trained on other statistics sees its own input: (x - 0.5) / 0.5 from ImageNet-normalised x
    other = detection_backbone("resnet18", pretrained=False, pretrained_cfg_overlay=dict(mean=(0.5,) * 3, std=(0.5,) * 3))
    x = torch.rand(1, 3, 32, 32)
    imnet = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(other.pre(imnet), (x - 0.5) / 0.5, rtol=1e-5, atol=1e-5)
    assert other.out_channels == 256 and list(other(imnet)) == ["0", "1", "2", "3", "pool"]
    assert not hasattr(detection_backbone("resnet18", pretrained=False), "pre")  # ImageNet statistics: no extra layer
