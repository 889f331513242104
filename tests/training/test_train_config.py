"""Config layering and error messages."""

import pytest

from training.config import ConfigError, load_config


def test_method_recipe_then_config_file_then_cli(tmp_path):
    cfg = load_config(["--method", "mocov2"])
    assert (cfg["lr"], cfg["lr_schedule"], cfg["hparams"]["tau"], cfg["aug"]["preset"]) == (0.03, "cosine", 0.2, "mocov2")
    f = tmp_path / "c.yaml"
    f.write_text("method: mocov2\nlr: 1e-1\nhparams: {K: 4096}\naug: {scale: [0.3, 1.0]}\n")
    cfg = load_config(["--config", str(f), "--lr", "0.5", "--hparams.tau", "0.1", "--batch-size", "64",
                       "--aug.blur=0"])
    assert cfg["lr"] == 0.5 and cfg["batch_size"] == 64
    assert cfg["hparams"] == {"tau": 0.1, "K": 4096, "m": 0.999, "dim": 128}
    assert cfg["aug"] == {"preset": "mocov2", "scale": [0.3, 1.0], "blur": 0}
    assert cfg["output"] == "runs/mocov2_resnet50"


def test_no_arguments_is_the_quickstart():
    cfg = load_config([])
    assert cfg["output"] == "runs/quickstart" and cfg["data"] == "synthetic"


def test_unknown_method_lists_methods():
    with pytest.raises(ConfigError, match="Did you mean simclr.*Available: instdisc, invaspread"):
        load_config(["--method", "simclrr"])


def test_unknown_keys_suggest_close_matches():
    with pytest.raises(ConfigError, match="unknown config key 'weight_decya'.*Did you mean weight_decay"):
        load_config(["--method", "simclr", "--weight-decya", "0.1"])
    with pytest.raises(ConfigError, match="hparams.temperature.*simclr takes: tau"):
        load_config(["--method", "simclr", "--hparams.temperature", "0.1"])
    with pytest.raises(ConfigError, match="aug.scael.*Did you mean scale"):
        load_config(["--method", "simclr", "--aug.scael", "[0.2,1]"])
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        load_config(["--method", "simclr", "--optimizer", "adam"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(["--method", "simclr", "--batch-size", "10", "--grad-accum", "3"])


def test_recipe_model_args_belong_to_the_recipe_model():
    """MoCo v3's recipe builds vits.py's ViT-S (12 heads, timm's vit_small has 6); another --model starts from
    no model_args, so `--model resnet18` does not receive num_heads."""
    from training.pretrain import build_backbone
    cfg = load_config(["--method", "mocov3", "--image-size", "32", "--output", "/tmp/unused"])
    assert cfg["model_args"] == {"num_heads": 12}
    vit = build_backbone(cfg, weights=False)
    assert (vit.blocks[0].attn.num_heads, vit.embed_dim, len(vit.blocks)) == (12, 384, 12)
    assert load_config(["--method", "mocov3", "--model", "resnet18", "--output", "/tmp/unused"])["model_args"] == {}
    cfg = load_config(["--method", "dino", "--model", "resnet18", "--model-args.channels", "[8,16,32,64]",
                       "--output", "/tmp/unused"])
    assert cfg["model_args"] == {"channels": [8, 16, 32, 64]}  # not DINO's drop_path_rate
