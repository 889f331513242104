"""model_cards/: one card per entry with weights, current with the registry (CI runs this check)."""
import yaml

import clzoo
from clzoo._registry import MethodInfo, _methods
from clzoo.cards import CARDS_DIR, bibtex, check_cards, render_card
from clzoo.cli import main

SECTIONS = ["## Model details", "## Training recipe", "## Reported results", "## Preprocessing", "## Usage",
            "## Licence", "## Limitations", "## Citation"]
# methods whose authors (FAIR, dl.fbaipublicfiles.com) released the weights under CC BY-NC 4.0
# (../shared/reference/peers.md); PyContrast's re-implementations of MoCo are its author's, BSD-2
NON_COMMERCIAL = {"mocov1", "mocov2", "mocov3", "swav", "deepclusterv2", "selav2", "simsiam"}


def test_model_cards_are_current():
    problems = check_cards()
    assert not problems, "\n".join(problems) + "\nrun `clzoo cards --write`"
    assert sorted(p.stem for p in CARDS_DIR.glob("*.md")) == sorted(clzoo.list_pretrained())


def split_card(text):
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_every_card_has_the_hub_metadata_and_the_registry_facts():
    names = clzoo.list_pretrained()
    assert len(names) >= 40
    for name in names:
        info = clzoo.model_info(name)
        meta, body = split_card((CARDS_DIR / f"{name}.md").read_text())
        assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-feature-extraction", name
        assert {"timm", "clzoo", info["method"]} <= set(meta["tags"]), name
        assert meta["datasets"] == [info["training"]["dataset"]], name
        if info["license"] == "unknown":
            assert meta["license"] == "other" and meta["license_name"] == "no-license-published", name
            assert "published no licence" in body
        else:
            assert meta["license"] == info["license"], name
        if info["method"] in NON_COMMERCIAL and "dl.fbaipublicfiles.com" in info["weights"]["url"]:
            assert meta["license"] == "cc-by-nc-4.0" and "non-commercial use only" in body, name

        positions = [body.index(s) for s in SECTIONS]
        assert positions == sorted(positions), name
        assert f"[arXiv:{info['paper']['arxiv']}]" in body and "```bibtex\n@" in body, name
        for m in info["metrics"]:
            assert f"| {m['value']} | {m['protocol']} |" in body, (name, m)
        t = info["training"]
        assert f"**Epochs:** {t['epochs'] or 'not recorded'}" in body, name
        assert f"**Batch size:** {t['batch_size'] or 'not recorded'}" in body, name
        assert t["recipe"] in body, name
        pre = info["preprocessing"]
        assert f"center-crop {pre['input_size'][1]} x {pre['input_size'][2]}" in body and pre["interpolation"] in body
        assert f"clzoo.create_model('{name}', pretrained=True)" in body and "torch.hub.load(" in body, name
        assert "timm.create_model('hf-hub:" in body, name


def test_entry_with_a_hub_copy_and_pushed_cards_name_their_repo():
    assert "hf-hub:timm/vit_small_patch16_224.dino" in render_card("dino_vits16")
    card = render_card("mocov2_resnet50.800ep", repo_id="me/moco")
    assert "timm.create_model('hf-hub:me/moco', pretrained=True)" in card and "import clzoo" in card


def test_cards_cli_check_and_write(tmp_path, capsys):
    out = tmp_path / "cards"
    assert main(["cards", "--check", "--dir", str(out)]) == 1
    assert "missing:" in capsys.readouterr().err

    assert main(["cards", "--write", "--dir", str(out)]) == 0
    assert len(list(out.glob("*.md"))) == len(clzoo.list_pretrained())
    assert main(["cards", "--check", "--dir", str(out)]) == 0
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.md")}
    assert main(["cards", "--write", "--dir", str(out)]) == 0  # idempotent: nothing rewritten
    assert "0 card(s)" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("*.md")}

    card = out / "swav_resnet50.800ep.md"
    card.write_bytes(card.read_bytes().replace(b"75.3", b"75.4"))
    (out / "mocov2_resnet50.200ep.md").unlink()
    (out / "removed_entry.old.md").write_text("a card of an entry that no longer exists\n")
    capsys.readouterr()
    assert main(["cards", "--check", "--dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"stale: {card}" in err and "missing:" in err and "mocov2_resnet50.200ep.md" in err
    assert "orphaned" in err and "removed_entry.old.md" in err and "clzoo cards --write" in err

    assert main(["cards", "--write", "--dir", str(out)]) == 0
    assert main(["cards", "--check", "--dir", str(out)]) == 0
    assert not (out / "removed_entry.old.md").exists()


def test_bibtex_of_a_method_without_a_hand_written_entry(monkeypatch):
    for method, info in clzoo.list_methods().items():
        text = bibtex(method)
        assert text.startswith("@") and text.count("{") == text.count("}") and info.paper[:30] in text
    monkeypatch.setitem(_methods, "newssl", MethodInfo("NewSSL", "A New Method", "Doe, Roe", "ICLR 2024",
                                                       "2401.00001", "https://example.org/code"))
    text = bibtex("newssl")
    assert text.startswith("@article{doe2024newssl,") and "author = {Doe and Roe}" in text
    assert "arXiv:2401.00001" in text and "year = {2024}" in text and "title = {A New Method}" in text
