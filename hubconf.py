"""torch.hub entrypoints: one per clzoo registry entry.

    model = torch.hub.load("<owner>/clzoo", "mocov2_resnet50", pretrained=True)            # default tag
    model = torch.hub.load("<owner>/clzoo", "mocov2_resnet50", tag="200ep", pretrained=True)
    model = torch.hub.load("/path/to/clzoo", "dino_vits16", source="local", pretrained=False, trust_repo=True)

Each entrypoint takes `pretrained=True` (as the DINO, SwAV and Barlow Twins hubconfs do), an optional
`tag`, and timm kwargs (`num_classes`, `features_only`, `img_size`, ...); it returns a timm model.
"""

dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors"]

from clzoo import create_model as _create_model  # noqa: E402
from clzoo import list_models as _list_models  # noqa: E402
from clzoo import model_info as _model_info  # noqa: E402


def _make_entrypoint(arch):
    info = _model_info(arch)
    tags = ", ".join(info["available_tags"]) or "none"
    metrics = "; ".join(f"{m['value']}% {m['name'].replace('imagenet_', '').replace('_', ' ')}"
                        for m in info["metrics"])

    def entrypoint(pretrained=True, tag=None, **kwargs):
        name = f"{arch}.{tag}" if tag else arch
        return _create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = arch
    entrypoint.__doc__ = (f"{info['method_name']} {info['backbone']} ({info['paper']['venue']}). "
                          f"{metrics + '. ' if metrics else ''}Tags: {tags} (default {info['tag'] or 'none'}). "
                          f"Licence: {info['license']}.")
    return entrypoint


for _arch in _list_models():
    globals()[_arch] = _make_entrypoint(_arch)
