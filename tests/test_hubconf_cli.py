"""torch.hub entrypoints and the `clzoo` command line."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.models import VisionTransformer

import clzoo
from clzoo.cli import main

REPO = Path(__file__).resolve().parents[1]


def load_hubconf():
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_entrypoint_per_registry_entry_and_no_helpers():
    hub = load_hubconf()
    public = sorted(n for n in dir(hub) if not n.startswith("_") and callable(getattr(hub, n)))
    assert public == sorted(clzoo.list_models())
    assert all(importlib.util.find_spec(dep) for dep in hub.dependencies)
    assert "huggingface_hub" in hub.dependencies  # import names, not distribution names
    assert "74.5% knn top1" in hub.dino_vits16.__doc__ and "cc-by-nc-4.0" in hub.mocov3_vits16.__doc__


def test_torch_hub_load_local():
    model = torch.hub.load(str(REPO), "dino_vits16", source="local", pretrained=False, trust_repo=True,
                           img_size=32)
    assert isinstance(model, VisionTransformer) and model.num_classes == 0
    tagged = torch.hub.load(str(REPO), "mocov2_resnet50", source="local", pretrained=False, tag="200ep",
                            num_classes=5)
    assert tagged.pretrained_cfg["tag"] == "200ep" and tagged.fc.out_features == 5


def test_torch_hub_load_pretrained_from_mirror(mirror, tmp_path):
    torch.manual_seed(0)
    src = clzoo.create_model("barlowtwins_resnet50").eval()
    mirror.add(clzoo.get_pretrained_cfg("barlowtwins_resnet50").url, src.state_dict())
    model = torch.hub.load(str(REPO), "barlowtwins_resnet50", source="local", trust_repo=True)  # pretrained=True
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), src(x))


def test_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["name", "method", "backbone"]
    assert len(out.splitlines()) == 1 + len(clzoo.list_models())
    assert main(["list", "mocov2*", "--pretrained", "--names-only"]) == 0
    assert capsys.readouterr().out.split() == ["mocov2_resnet50.200ep", "mocov2_resnet50.800ep",
                                               "mocov2_resnet50.pycontrast"]
    assert main(["list", "nothing*"]) == 1


def test_cli_info_and_errors(capsys):
    assert main(["info", "swav_resnet50w2"]) == 0
    out = capsys.readouterr().out
    assert "SwAV" in out and "cc-by-nc-4.0" in out and "77.3%" in out and "swav_RN50w2_400ep_pretrain" in out
    assert main(["info", "swav_resnet50w3"]) == 2
    err = capsys.readouterr().err
    assert "Unknown clzoo model 'swav_resnet50w3'" in err and "swav_resnet50w2" in err


def test_cli_convert(tmp_path, capsys):
    torch.manual_seed(0)
    src = clzoo.create_model("simsiam_resnet50").eval()
    sd = {f"module.encoder.{k}": v for k, v in src.state_dict().items()}
    sd["module.encoder.fc.0.weight"] = torch.randn(2048, 2048)
    sd["module.predictor.0.weight"] = torch.randn(512, 2048)
    official = tmp_path / "checkpoint_0099.pth.tar"
    torch.save({"epoch": 100, "arch": "resnet50", "state_dict": sd, "optimizer": {}}, official)
    out = tmp_path / "simsiam.safetensors"
    assert main(["convert", "simsiam_resnet50", "--input", str(official), "--output", str(out)]) == 0
    assert "loads into simsiam_resnet50.100ep_bs256" in capsys.readouterr().out
    model = clzoo.create_model("simsiam_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), src(x))
    # a file of another method is refused with the layout it lacks
    assert main(["convert", "mocov2_resnet50", "--input", str(official), "--output", str(out)]) == 2
    assert "not a moco checkpoint" in capsys.readouterr().err


def test_python_dash_m():
    res = subprocess.run([sys.executable, "-m", "clzoo", "list", "dino*", "--names-only"], capture_output=True,
                         text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.split() == ["dino_resnet50", "dino_vitb8", "dino_vitb16",
                                                          "dino_vits8", "dino_vits16"]
