"""Writes the key / shape lists of the detection frameworks' ResNet-50 backbones, built by their own code:

    python gen_keys.py detectron2 D2_SRC COMMIT     # D2_SRC: a detectron2 source tree (needs fvcore, iopath,
                                                   # omegaconf, hydra-core, cloudpickle on the path)
    python gen_keys.py mmdet MMDET_SITE VERSION     # MMDET_SITE: where `pip install --target` put mmdet + mmcv-lite
    python gen_keys.py mmseg MMSEG_SITE VERSION     # mmsegmentation (+ mmcv-lite, mmengine on the path)

detectron2: `build_resnet_backbone` with DEPTH 50 (the keys `matching_heuristics` matches by suffix under
backbone.bottom_up.). mmdet: `mmdet.models.backbones.ResNet(depth=50)`, loaded from its source file (mmdet's
package __init__ needs mmcv's compiled ops, which a CPU install from the registry lacks). mmseg: its
`VisionTransformer` as ViT-S/16 (384 wide, 6 heads, patch_bias=True as timm's ViTs have, final norm); the header
also records the max |difference| between mmseg's last-layer map on clzoo's export of a random timm
vit_small_patch16_224 and timm's own patch tokens. Output: one "key<TAB>shape" line per tensor, after a header
naming the source and commit / version.
"""

import importlib.util
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))


def detectron2_keys(src):
    sys.path.insert(0, src)
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).state_dict()


def openmmlab_loader(package, modules, site):
    """Stand-in `package` modules (a registry whose decorator returns the class) and a loader of its source files
    from `site`: the package __init__ needs mmcv's compiled ops, which a CPU install from the registry lacks."""
    class Registry:
        def register_module(self, *a, **k):
            return (lambda cls: cls) if not a or isinstance(a[0], str) else a[0]
    for name in (package, *(f"{package}.{m}" for m in modules)):
        sys.modules[name] = types.ModuleType(name)
    sys.modules[f"{package}.registry"] = types.ModuleType(f"{package}.registry")
    sys.modules[f"{package}.registry"].MODELS = Registry()
    sys.path.insert(0, site)

    def load(mod, path):
        spec = importlib.util.spec_from_file_location(mod, os.path.join(site, path))
        m = importlib.util.module_from_spec(spec)
        sys.modules[mod] = m
        spec.loader.exec_module(m)
        return m
    return load


def mmdet_keys(site):
    load = openmmlab_loader("mmdet", ("models", "models.layers", "models.backbones", "utils"), site)
    utils = sys.modules["mmdet.utils"]
    utils.ConfigType = utils.OptConfigType = utils.OptMultiConfig = object
    layer = load("mmdet.models.layers.res_layer", "mmdet/models/layers/res_layer.py")
    sys.modules["mmdet.models.layers"].ResLayer = layer.ResLayer
    resnet = load("mmdet.models.backbones.resnet", "mmdet/models/backbones/resnet.py")
    return resnet.ResNet(depth=50).state_dict()


def mmseg_vit(site):
    load = openmmlab_loader("mmseg", ("models", "models.utils", "models.backbones"), site)
    utils = sys.modules["mmseg.models.utils"]
    utils.PatchEmbed = load("mmseg.models.utils.embed", "mmseg/models/utils/embed.py").PatchEmbed
    utils.resize = load("mmseg.models.utils.wrappers", "mmseg/models/utils/wrappers.py").resize
    vit = load("mmseg.models.backbones.vit", "mmseg/models/backbones/vit.py")
    return vit.VisionTransformer(img_size=224, patch_size=16, embed_dims=384, num_layers=12, num_heads=6,
                                 patch_bias=True, final_norm=True, with_cls_token=True, out_indices=-1)


def mmseg_check(model):
    """clzoo's mmseg export of a random timm ViT-S/16 in mmseg's model: max |diff| of the last map."""
    import tempfile
    import timm
    import torch
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
    from clzoo.detection import export_backbone
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
    with tempfile.TemporaryDirectory() as d:
        export_backbone(vit, "mmdet", os.path.join(d, "v.pth"))
        sd = torch.load(os.path.join(d, "v.pth"), weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("backbone."): v for k, v in sd.items()}, strict=True)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        model.eval()  # (mmseg overrides train() without returning the module)
        ours = model(x)[-1]
        ref = vit.forward_features(x)[:, 1:].transpose(1, 2).reshape(2, 384, 14, 14)
    return float((ours - ref).abs().max())


def main(framework, path, version):
    note = ""
    if framework == "mmseg":
        model = mmseg_vit(path)
        sd, what = model.state_dict(), "ViT-S/16 (VisionTransformer)"
        note = f"; clzoo's export of a random timm ViT-S/16 loads strictly, last map max |diff| {mmseg_check(model):.1e}"
    else:
        sd, what = (detectron2_keys(path) if framework == "detectron2" else mmdet_keys(path)), "ResNet-50"
    out = os.path.join(HERE, f"{framework}_{'vit_small' if framework == 'mmseg' else 'resnet50'}_keys.txt")
    with open(out, "w") as f:
        f.write(f"# {framework} {what} backbone state_dict, built by its own code at {version}{note}\n")
        for k, v in sd.items():
            f.write(f"{k}\t{tuple(v.shape)}\n")
    print(f"{len(sd)} keys -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
