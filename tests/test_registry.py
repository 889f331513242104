"""Registry: names, tags, aliases, metadata and the errors users see."""
import pytest
import timm
from timm.models import ResNet, VisionTransformer

import clzoo
from clzoo import NoPretrainedWeightsError, UnknownModelError

# The minimum list of names (method-first, {method}_{backbone}).
REQUIRED = [
    "dino_vits16", "dino_vits8", "dino_vitb16", "dino_vitb8", "dino_resnet50", "mocov1_resnet50",
    "mocov2_resnet50", "mocov3_resnet50", "mocov3_vits16", "mocov3_vitb16", "simclr_resnet50",
    "simclr_resnet50w2", "simclr_resnet50w4", "simclrv2_resnet50", "swav_resnet50", "swav_resnet50w2",
    "swav_resnet50w4", "swav_resnet50w5", "deepclusterv2_resnet50", "selav2_resnet50", "byol_resnet50",
    "simsiam_resnet50", "barlowtwins_resnet50", "instdisc_resnet50", "cmc_resnet50", "infomin_resnet50",
    "pirl_resnet50",
]
# SimCLR v2's 13 released depth/width/SK combinations.
SIMCLRV2 = [f"simclrv2_{sk}resnet{d}{w}" for sk, d, w in [
    ("", 50, ""), ("", 50, "w2"), ("", 101, ""), ("", 101, "w2"), ("", 152, ""), ("", 152, "w2"),
    ("sk", 50, ""), ("sk", 50, "w2"), ("sk", 101, ""), ("sk", 101, "w2"), ("sk", 152, ""), ("sk", 152, "w2"),
    ("sk", 152, "w3")]]


def test_every_required_name_is_registered():
    names = set(clzoo.list_models())
    assert set(REQUIRED) <= names, sorted(set(REQUIRED) - names)
    assert set(SIMCLRV2) <= names
    assert len(names) == 51


def test_names_are_timm_registered_and_method_first():
    for name in clzoo.list_models():
        assert timm.is_model(name), name
        assert name.split("_", 1)[0] in clzoo.list_methods(), name


def test_list_models_patterns_and_pretrained_tags():
    assert clzoo.list_models("mocov2*") == ["mocov2_resnet50"]
    tagged = clzoo.list_models("mocov2*", pretrained=True)
    assert tagged == ["mocov2_resnet50.200ep", "mocov2_resnet50.800ep", "mocov2_resnet50.pycontrast"]
    assert clzoo.list_pretrained("mocov2*") == tagged
    # every registered release has a source: a URL, or a shared folder and the file's name in it
    from clzoo._registry import list_entries
    assert clzoo.list_pretrained() == list_entries()
    assert clzoo.model_info("infomin_resnet101")["weights"]["folder_file"] == "InfoMin_resnet101_e300.pth"


def test_default_tag_is_the_strongest_release():
    assert clzoo.get_pretrained_cfg("mocov2_resnet50").tag == "800ep"
    assert clzoo.get_pretrained_cfg("swav_resnet50").tag == "800ep"
    assert clzoo.get_pretrained_cfg("mocov3_resnet50").tag == "1000ep"


def test_pretrained_cfg_is_an_encoder_cfg():
    cfg = clzoo.get_pretrained_cfg("mocov2_resnet50.200ep")
    assert cfg.num_classes == 0
    assert cfg.url.endswith("moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar")
    assert cfg.license == "cc-by-nc-4.0"
    simclr = clzoo.get_pretrained_cfg("simclr_resnet50")
    assert simclr.mean == (0.0, 0.0, 0.0) and simclr.std == (1.0, 1.0, 1.0)  # TF: [0,1] inputs
    assert clzoo.get_pretrained_cfg("dino_vits16").hf_hub_id == "timm/vit_small_patch16_224.dino"


@pytest.mark.parametrize("name,licence", [("mocov1_resnet50", "cc-by-nc-4.0"), ("mocov3_vits16", "cc-by-nc-4.0"),
                                          ("swav_resnet50w2", "cc-by-nc-4.0"), ("simsiam_resnet50", "cc-by-nc-4.0"),
                                          ("deepclusterv2_resnet50", "cc-by-nc-4.0"), ("dino_vitb8", "apache-2.0"),
                                          ("barlowtwins_resnet50", "mit")])
def test_model_info_licence(name, licence):
    assert clzoo.model_info(name)["license"] == licence


def test_model_info_fields():
    info = clzoo.model_info("dino_vits16")
    assert info["name"] == "dino_vits16.in1k"
    assert info["method"] == "dino" and info["method_name"] == "DINO"
    assert info["paper"]["arxiv"] == "2104.14294" and "Emerging Properties" in info["paper"]["title"]
    assert info["weights"]["url"].startswith("https://dl.fbaipublicfiles.com/dino/")
    assert info["weights"]["format"] == "state_dict"
    metrics = {m["name"]: m for m in info["metrics"]}
    assert metrics["imagenet_linear_top1"]["value"] == 77.0
    assert metrics["imagenet_knn_top1"]["value"] == 74.5
    assert "20-NN" in metrics["imagenet_knn_top1"]["protocol"]
    assert "vit_small_patch16_224.dino" in info["aliases"]
    assert clzoo.model_info("mocov2_resnet50.200ep")["training"]["epochs"] == 200


def test_timm_alias_resolves_to_the_same_entry():
    m = clzoo.create_model("vit_small_patch16_224.dino", img_size=32)
    assert isinstance(m, VisionTransformer)
    assert m.pretrained_cfg["architecture"] == "dino_vits16"
    assert clzoo.model_info("vit_small_patch16_224.dino")["name"] == "dino_vits16.in1k"


def test_timm_own_tags_are_not_wiped():
    # re-registering a timm arch would drop its tags (ecosystem.md §1.2); clzoo must not
    tags = timm.list_pretrained("vit_small_patch16_224.*")
    assert "vit_small_patch16_224.dino" in tags and "vit_small_patch16_224.augreg_in21k" in tags
    assert len(timm.list_pretrained("resnet50.*")) > 5


def test_create_model_returns_timm_classes_with_encoder_default():
    m = clzoo.create_model("mocov2_resnet50")
    assert type(m) is ResNet and m.num_classes == 0
    m = clzoo.create_model("mocov2_resnet50", num_classes=10, global_pool="max")
    assert m.num_classes == 10 and m.fc.out_features == 10 and m.global_pool.pool_type == "max"
    plain = clzoo.create_model("resnet18")  # any timm architecture, also as an encoder
    assert plain.num_classes == 0


def test_timm_factory_knows_clzoo_names():
    m = timm.create_model("mocov3_vits16", img_size=32)
    assert m.blocks[0].attn.num_heads == 12


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError) as e:
        clzoo.create_model("dino_vit16")
    msg = str(e.value)
    assert "dino_vit16" in msg and "dino_vits16" in msg and "dino_vitb16" in msg and "clzoo list" in msg
    with pytest.raises(UnknownModelError, match="mocov2_resnet50"):
        clzoo.create_model("mocov2_resnet5")
    with pytest.raises(UnknownModelError, match="neither a clzoo entry nor a timm"):
        clzoo.create_model("totally_unknown_net")


def test_unknown_tag_lists_available_tags():
    with pytest.raises(UnknownModelError) as e:
        clzoo.create_model("mocov2_resnet50.300ep")
    assert "300ep" in str(e.value) and "200ep" in str(e.value) and "800ep" in str(e.value)


def test_pretrained_without_weights_says_how_to_pass_a_file(clzoo_home):
    with pytest.raises(NoPretrainedWeightsError) as e:
        clzoo.create_model("infomin_resnet50", pretrained=True, pretrained_cfg_overlay=dict(url=None))
    msg = str(e.value)
    assert "infomin_resnet50" in msg and "pretrained_cfg_overlay=dict(file=" in msg and "pretrained=False" in msg
