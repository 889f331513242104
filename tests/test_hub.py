"""Push to and load from the Hugging Face Hub, offline: a Hub stand-in on 127.0.0.1 (tests/fake_hub.py).

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HOME at import (conftest sets offline mode and an
empty HF_HOME), so the `hub` fixture points `huggingface_hub.constants` at the stand-in for one test.
"""
import json

import pytest
import timm
import torch
import yaml
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.torch import load

import clzoo
from clzoo.cards import render_card
from clzoo.hub import save_for_hub
from clzoo.cli import main
from tests.fake_hub import FakeHub
from tests.helpers import randomize_bn_stats

TOKEN = "hf_test_write_token"
NO_PICKLE = (".bin", ".pt", ".pth", ".pkl", ".tar")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = FakeHub(tokens=(TOKEN,))
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    # no token but the one a test passes: none from the environment, none stored on disk
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_token" / "stored_tokens"))
    yield server
    server.close()


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def make_run_dir(path, seed=0):
    """What training/ exports: timm's save_for_hf folder + run_config.yaml + results.json, and files that must
    never be uploaded (the pickled training checkpoint, logs)."""
    torch.manual_seed(seed)
    model = randomize_bn_stats(timm.create_model("resnet18", num_classes=0), torch.Generator().manual_seed(seed))
    timm.models.save_for_hf(model, path, safe_serialization=True, data_config={
        "input_size": (3, 64, 64), "interpolation": "bilinear", "crop_pct": 0.875})
    (path / "run_config.yaml").write_text(
        "method: mocov2\nmodel: resnet18\ndata: hf:frgfm/imagenette\nimage_size: 64\nepochs: 3\n"
        "batch_size: 32\noptimizer: sgd\nlr: 0.03\nhparams: {tau: 0.2, K: 4096}\n")
    (path / "results.json").write_text(json.dumps({"knn_top1": 0.4321, "knn_top1_init": 0.1234,
                                                   "knn": {"k": 20, "temperature": 0.07}, "method": "mocov2",
                                                   "epochs": 3.0, "steps": 30}))
    torch.save({"model": model.state_dict(), "step": 30}, path / "checkpoint.pt")
    (path / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    return model


def test_run_dir_push_then_hf_hub_load_is_identical(hub, tmp_path):
    run = tmp_path / "run"
    model = make_run_dir(run)
    info = clzoo.push_to_hub(run, "org/r18-mocov2", token=TOKEN, endpoint=hub.url)
    assert info.oid in hub.repos["org/r18-mocov2"].commits

    files = hub.repos["org/r18-mocov2"].files
    assert set(files) == {"README.md", "config.json", "model.safetensors", "run_config.yaml", "results.json"}
    assert not any(f.endswith(NO_PICKLE) for f in files)
    config = json.loads(files["config.json"])
    assert config["architecture"] == "resnet18" and config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert config["clzoo"]["source"] == "training run" and config["clzoo"]["results"]["knn_top1"] == 0.4321

    loaded = clzoo.create_model("hf-hub:org/r18-mocov2", pretrained=True)
    same_tensors(model, loaded)
    assert loaded.pretrained_cfg["input_size"] == (3, 64, 64)

    card = files["README.md"].decode()
    meta = front_matter(card)
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-feature-extraction"
    assert {"mocov2", "timm", "clzoo"} <= set(meta["tags"]) and meta["datasets"] == ["frgfm/imagenette"]
    # no licence is claimed for a run's own weights (not the one timm's resnet18 cfg names) unless given
    assert meta["license"] == "other" and "license" not in config["pretrained_cfg"]
    assert "Set one with `clzoo push --license ID`" in card
    # the run's configuration and evaluation results are in the card
    assert "hparams: {tau: 0.2, K: 4096}" in card and "| knn_top1 | 0.4321 |" in card
    assert "(k=20, T=0.07)" in card and "hf-hub:org/r18-mocov2" in card and "@inproceedings{he2020momentum" not in card
    assert "@article{chen2020improved" in card


def test_entry_push_carries_its_card_and_loads_into_the_clzoo_arch(hub, tmp_path, monkeypatch):
    name = "instdisc_resnet18.nce4k"
    source = randomize_bn_stats(clzoo.create_model("instdisc_resnet18"))
    official = {f"module.{k}": v for k, v in source.state_dict().items()}  # lemniscate.pytorch's layout
    official.update({"module.fc.weight": torch.randn(128, 512), "module.fc.bias": torch.randn(128)})
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": official}, tmp_path / "lemniscate_resnet18.pth")

    assert main(["push", name, "--file", str(tmp_path / "lemniscate_resnet18.pth"), "--repo-id", "org/instdisc-r18",
                 "--token", TOKEN, "--endpoint", hub.url, "--private"]) == 0
    repo = hub.repos["org/instdisc-r18"]
    assert repo.private and set(repo.files) == {"README.md", "config.json", "model.safetensors"}
    assert repo.files["README.md"].decode() == render_card(name, "org/instdisc-r18")
    meta = front_matter(repo.files["README.md"].decode())
    assert meta["license"] == "other" and meta["license_name"] == "no-license-published"  # registry: unknown
    assert meta["datasets"] == ["imagenet-1k"] and "instdisc" in meta["tags"]
    config = json.loads(repo.files["config.json"])
    assert config["architecture"] == "instdisc_resnet18" and config["pretrained_cfg"]["tag"] == "nce4k"
    assert config["clzoo"]["entry"]["name"] == name and config["clzoo"]["entry"]["metrics"][0]["value"] == 41.0

    # a private repo needs the token to download
    with pytest.raises(RepositoryNotFoundError):
        clzoo.create_model("hf-hub:org/instdisc-r18", pretrained=True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    loaded = clzoo.create_model("hf-hub:org/instdisc-r18", pretrained=True)
    assert type(loaded).__name__ == "ResNet" and loaded.pretrained_cfg["architecture"] == "instdisc_resnet18"
    same_tensors(source, loaded)


def test_repush_updates_weights_and_keeps_an_edited_card(hub):
    # a clzoo ViT (DINO arch) at tiny size: model_args travel in config.json and rebuild it from the Hub
    def tiny_vit(seed):
        torch.manual_seed(seed)
        return clzoo.create_model("dino_vits16", img_size=32, embed_dim=48, depth=2, num_heads=2)

    first, second = tiny_vit(0), tiny_vit(1)
    clzoo.push_to_hub(first, "org/vit", token=TOKEN, endpoint=hub.url, license="mit")
    repo = hub.repos["org/vit"]
    assert front_matter(repo.files["README.md"].decode())["license"] == "mit"
    same_tensors(first, clzoo.create_model("hf-hub:org/vit", pretrained=True))

    edited = repo.files["README.md"] + b"\nEdited on the Hub.\n"
    repo.files["README.md"] = edited
    repo.files["pytorch_model.bin"] = b"pickled weights of an earlier upload"  # e.g. by timm's push_to_hf_hub
    clzoo.push_to_hub(second, "org/vit", token=TOKEN, endpoint=hub.url, license="mit")
    assert repo.files["README.md"] == edited
    assert set(repo.files) == {"README.md", "config.json", "model.safetensors"}  # the pickle file is gone
    weights = load(repo.files["model.safetensors"])
    assert torch.equal(weights["pos_embed"], second.pos_embed.detach())
    loaded = clzoo.create_model("hf-hub:org/vit", pretrained=True)
    assert loaded.embed_dim == 48 and len(loaded.blocks) == 2
    same_tensors(second, loaded)

    clzoo.push_to_hub(second, "org/vit", token=TOKEN, endpoint=hub.url, license="mit", overwrite_card=True)
    assert b"Edited on the Hub." not in repo.files["README.md"]
    assert len(repo.commits) == 3


def test_push_without_a_token_fails_clearly(hub, tmp_path, capsys):
    run = tmp_path / "run"
    make_run_dir(run)
    with pytest.raises(clzoo.HubError, match="needs a token with write access.*HF_TOKEN.*hf auth login"):
        clzoo.push_to_hub(run, "org/r18", endpoint=hub.url)
    assert main(["push", str(run), "--repo-id", "org/r18", "--endpoint", hub.url]) == 2
    assert "needs a token with write access" in capsys.readouterr().err
    assert not hub.requests  # nothing was sent

    with pytest.raises(clzoo.HubError, match=r"refused the token \(HTTP 401\)"):
        clzoo.push_to_hub(run, "org/r18", token="hf_wrong", endpoint=hub.url)
    assert not hub.repos


def test_push_refuses_pickle_weights_and_offline_mode(hub, tmp_path, monkeypatch):
    run = tmp_path / "run"
    model = make_run_dir(run)
    (run / "model.safetensors").unlink()
    torch.save(model.state_dict(), run / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="no model.safetensors.*pytorch_model.bin.*safetensors weights only"):
        clzoo.push_to_hub(run, "org/r18", token=TOKEN, endpoint=hub.url)

    make_run_dir(run)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(clzoo.HubError, match="unset HF_HUB_OFFLINE"):
        clzoo.push_to_hub(run, "org/r18", token=TOKEN, endpoint=hub.url)
    assert not hub.repos and not hub.requests


def test_a_run_started_from_an_entry_keeps_its_licence(tmp_path):
    run = tmp_path / "run"
    make_run_dir(run)
    (run / "run_config.yaml").write_text("method: mocov2\nmodel: resnet18\ninit_from: mocov2_resnet50\n")
    folder = save_for_hub(run, tmp_path / "repo", "org/finetuned")
    card = (folder / "README.md").read_text()
    assert front_matter(card)["license"] == "cc-by-nc-4.0"  # MoCo's weights are CC-BY-NC
    assert json.loads((folder / "config.json").read_text())["pretrained_cfg"]["license"] == "cc-by-nc-4.0"
    assert "clzoo entry `mocov2_resnet50.800ep`" in card and "keep its terms" in card
