"""Writes the key / shape lists of the detection frameworks' ResNet-50 backbones, built by their own code:

    python gen_keys.py detectron2 D2_SRC COMMIT     # D2_SRC: a detectron2 source tree (needs fvcore, iopath,
                                                   # omegaconf, hydra-core, cloudpickle on the path)
    python gen_keys.py mmdet MMDET_SITE VERSION     # MMDET_SITE: where `pip install --target` put mmdet + mmcv-lite

detectron2: `build_resnet_backbone` with DEPTH 50 (the keys `matching_heuristics` matches by suffix under
backbone.bottom_up.). mmdet: `mmdet.models.backbones.ResNet(depth=50)`, loaded from its source file (mmdet's
package __init__ needs mmcv's compiled ops, which a CPU install from the registry lacks). Output: one
"key<TAB>shape" line per tensor, after a header naming the source and commit / version.
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


def mmdet_keys(site):
    class Registry:
        def register_module(self, *a, **k):
            return (lambda cls: cls) if not a or isinstance(a[0], str) else a[0]
    for name in ("mmdet", "mmdet.models", "mmdet.models.layers", "mmdet.models.backbones", "mmdet.utils"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["mmdet.registry"] = types.ModuleType("mmdet.registry")
    sys.modules["mmdet.registry"].MODELS = Registry()
    utils = sys.modules["mmdet.utils"]
    utils.ConfigType = utils.OptConfigType = utils.OptMultiConfig = object
    sys.path.insert(0, site)

    def load(mod, path):
        spec = importlib.util.spec_from_file_location(mod, os.path.join(site, path))
        m = importlib.util.module_from_spec(spec)
        sys.modules[mod] = m
        spec.loader.exec_module(m)
        return m
    layer = load("mmdet.models.layers.res_layer", "mmdet/models/layers/res_layer.py")
    sys.modules["mmdet.models.layers"].ResLayer = layer.ResLayer
    resnet = load("mmdet.models.backbones.resnet", "mmdet/models/backbones/resnet.py")
    return resnet.ResNet(depth=50).state_dict()


def main(framework, path, version):
    sd = detectron2_keys(path) if framework == "detectron2" else mmdet_keys(path)
    out = os.path.join(HERE, f"{framework}_resnet50_keys.txt")
    with open(out, "w") as f:
        f.write(f"# {framework} ResNet-50 backbone state_dict, built by its own code at {version}\n")
        for k, v in sd.items():
            f.write(f"{k}\t{tuple(v.shape)}\n")
    print(f"{len(sd)} keys -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
