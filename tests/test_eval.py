"""training/eval_knn.py and training/eval_linear.py: hand-computed kNN, DINO's feature concatenations by hand,
protocol schedules, and both scripts end to end on generated ImageFolder trees against a plain forward."""
import json
import math
import os

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform

import clzoo
from tests.test_features import write_images
from training import eval_knn, eval_linear
from training.eval_common import cls_tokens, confusion_matrix, feature_fn

CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    write_images(str(root / "train"), 24, classes=CLASSES, seed=3)
    write_images(str(root / "val"), 12, classes=CLASSES, seed=4)
    return root


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    torch.manual_seed(1)
    model = timm.create_model("resnet18", num_classes=0)
    path = tmp_path_factory.mktemp("w") / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.eval()


def folder_features(model, root, size):
    """Reference: timm's eval transform at `size`, files in ImageFolder order, one batched forward."""
    cfg = timm.data.resolve_model_data_config(model) | {"input_size": (3, size, size)}
    tf = create_transform(**cfg)
    xs, ys = [], []
    for label, c in enumerate(sorted(os.listdir(root))):
        for f in sorted(os.listdir(os.path.join(root, c))):
            xs.append(tf(Image.open(os.path.join(root, c, f)).convert("RGB")))
            ys.append(label)
    with torch.no_grad():
        return model(torch.stack(xs)), torch.tensor(ys)


# ---------------------------------------------------------------------------------------------
# kNN

def test_knn_hand_made_case():
    # bank on the unit circle: class 0 at +-60 deg (cos 0.5 to the query), class 1 at 25.84 deg (cos 0.9)
    deg = torch.tensor([60.0, -60.0, math.degrees(math.acos(0.9)), 180.0])
    bank = torch.stack([torch.cos(torch.deg2rad(deg)), torch.sin(torch.deg2rad(deg))], 1) * 3  # not unit length
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[2.0, 0.0]])
    # k=1: the nearest is class 1. k=3 (neighbours 0.9, 0.5, 0.5): T=1 -> class 0 wins 2 e^0.5 = 3.30 > e^0.9 = 2.46;
    # T=0.1 -> class 1 wins e^9 = 8103 > 2 e^5 = 297. k=4 adds e^(-1/T) to class 1.
    for T, expect in ((1.0, {1: 1, 3: 0, 4: 0}), (0.1, {1: 1, 3: 1, 4: 1})):
        res = eval_knn.knn_evaluate(bank, labels, query, torch.tensor([0]), ks=(1, 3, 4), temperature=T)
        assert {k: int(p) for k, p in ((k, res["predictions"][k][0]) for k in (1, 3, 4))} == expect
        assert res["top1"] == {k: float(v == 0) for k, v in expect.items()}
    # T=1, k=4: class 0 = 2 e^0.5, class 1 = e^0.9 + e^-1 -> still class 0
    assert 2 * math.exp(0.5) > math.exp(0.9) + math.exp(-1)


def test_confusion_matrix():
    cm = confusion_matrix(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 2, 1, 1]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def hand_knn_top1(bank, bank_labels, test, test_labels, k, T, C):
    sim = F.normalize(test, dim=1) @ F.normalize(bank, dim=1).T
    s, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(test), C)
    for i in range(len(test)):
        for j in range(k):
            votes[i, bank_labels[idx[i, j]]] += math.exp(s[i, j] / T)
    return (votes.argmax(1) == test_labels).float().mean().item()


def test_eval_knn_script_matches_plain_forward(folder, resnet_weights, tmp_path):
    path, model = resnet_weights
    out = tmp_path / "knn"
    result = eval_knn.main(["--model", "resnet18", "--weights", str(path), "--img-size", "32", "--data", str(folder),
                            "--k", "1", "5", "20", "--temperature", "0.1", "--out", str(out), "--workers", "0",
                            "--chunk-size", "5", "--bank-chunk-size", "7"])
    bank, bank_labels = folder_features(model, folder / "train", 32)
    test, test_labels = folder_features(model, folder / "val", 32)
    for k in (1, 5, 20):
        assert result["top1_per_k"][str(k)] == pytest.approx(hand_knn_top1(bank, bank_labels, test, test_labels,
                                                                            k, 0.1, 3), abs=1e-6)
    saved = json.loads((out / "knn.json").read_text())
    assert saved["k"] == 20 and saved["top1"] == result["top1_per_k"]["20"]
    assert (saved["num_train"], saved["num_test"], saved["num_classes"], saved["feature_dim"]) == (24, 12, 3, 512)
    assert saved["top5"] is None and saved["weights"] == str(path)
    with Image.open(out / "knn.png") as png:
        assert png.format == "PNG" and png.width >= 800


# ---------------------------------------------------------------------------------------------
# linear probe

def test_dino_feature_concatenations_by_hand():
    vit = clzoo.create_model("dino_vits16", img_size=32, depth=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        outs = []
        for blk in vit.blocks:
            t = blk(t)
            outs.append(vit.norm(t))
        last4 = torch.cat([o[:, 0] for o in outs[-4:]], dim=1)
        cls, avg = outs[-1][:, 0], outs[-1][:, 1:].mean(1)
        interleaved = torch.stack([cls, avg], dim=2).reshape(2, -1)  # DINO: [cls_0, avg_0, cls_1, avg_1, ...]
        torch.testing.assert_close(feature_fn("cls_last4", vit)(vit, x), last4)
        torch.testing.assert_close(feature_fn("cls_avgpool", vit)(vit, x), interleaved)
        torch.testing.assert_close(cls_tokens(vit, x, 1, False), vit(x))  # the pooled embedding is [CLS]
    assert feature_fn("dino", vit).__name__ == "cls_last4"  # ViT-S
    vitb = clzoo.create_model("dino_vitb16", img_size=32, depth=1)
    assert feature_fn("dino", vitb).__name__ == "cls_avgpool"  # ViT-B
    assert feature_fn("dino", clzoo.create_model("resnet18")) is clzoo.features.pooled_embedding
    with pytest.raises(ValueError, match="need a ViT"):
        feature_fn("cls_last4", clzoo.create_model("resnet18"))


def test_protocols_and_schedules():
    P = eval_linear.PROTOCOLS
    assert eval_linear.get_protocol("pirl") is P["pycontrast"] and eval_linear.get_protocol("mocov1") is P["mocov2"]
    moco = P["mocov2"]
    assert [eval_linear.lr_at(e, 30.0, moco) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
        [30, 30, 3, 3, 0.3, 0.3])
    pyc = P["pycontrast"]
    assert [eval_linear.lr_at(e, 30.0, pyc) for e in (29, 30, 40, 50)] == pytest.approx([30, 6, 1.2, 0.24])
    dino = P["dino"]
    assert [eval_linear.lr_at(e, 1.0, dino) for e in (0, 50)] == pytest.approx([1.0, 0.5])
    vit, resnet = clzoo.create_model("dino_vits16", img_size=32, depth=1), clzoo.create_model("resnet18")
    assert P["dino"].scaled_lr(vit) == pytest.approx(0.004)  # 0.001 x 1024/256
    assert P["mocov3"].scaled_lr(vit) == 12.0 and P["mocov3"].scaled_lr(resnet) == pytest.approx(0.4)
    assert P["mocov2"].scaled_lr(resnet) == 30.0 and P["swav"].scaled_lr(resnet) == 0.3  # not scaled
    assert P["simsiam"].scaled_lr(resnet) == pytest.approx(1.6)
    with pytest.raises(ValueError, match="unknown protocol"):
        eval_linear.get_protocol("nope")


def test_larc_step_matches_formula():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.6, 0.8])
    opt = eval_linear.LARC([w], lr=2.0, momentum=0.9, weight_decay=0.0, trust=0.001)
    opt.step()  # rate = 0.001 * 5 / 1 -> w -= 2 * 0.005 * g
    torch.testing.assert_close(w.detach(), torch.tensor([3.0 - 0.006, 4.0 - 0.008]))


def test_linear_head_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 4
    labels = torch.arange(200) % 4
    feats = centers[labels] + torch.randn(200, 16, generator=g)
    protocol = eval_linear.Protocol("test", "sgd", 0.5, 32, 8, head_init="zeros")

    def batches(epoch):
        perm = torch.randperm(160, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, 160, 32):
            yield feats[perm[i:i + 32]], labels[perm[i:i + 32]]
    head, history = eval_linear.train_linear(batches, feats[160:], labels[160:], 16, 4, protocol, 0.5,
                                             torch.device("cpu"), log=lambda *a: None)
    assert len(history) == 8 and history[-1]["top1"] == 1.0
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[0]["lr"] == 0.5 and history[-1]["lr"] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_eval_linear_cached_features_end_to_end(folder, resnet_weights, tmp_path):
    path, _ = resnet_weights
    out = tmp_path / "lin"
    result = eval_linear.main(["--model", "resnet18", "--weights", str(path), "--img-size", "32", "--data",
                               str(folder), "--protocol", "simsiam", "--epochs", "3", "--batch-size", "8",
                               "--no-augment", "--out", str(out), "--workers", "0"])
    saved = json.loads((out / "linear.json").read_text())
    assert saved["top1"] == result["top1"] and saved["augment"] is False and saved["official_protocol"] is False
    assert saved["lr"] == pytest.approx(0.1 * 8 / 256)  # base 0.1 x batch/256
    assert saved["protocol_settings"]["optimizer"] == "larc" and len(saved["history"]) == 3
    assert (saved["feature_dim"], saved["num_classes"], saved["num_train"], saved["num_test"]) == (512, 3, 24, 12)
    with Image.open(out / "linear.png") as png:
        assert png.format == "PNG"


def test_eval_linear_dino_protocol_with_augmentation_on_a_run_dir(folder, tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"  # what the trainer exports: model.safetensors + timm config.json
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, depth=4)
    timm.models.save_for_hf(vit, str(run), safe_serialization=True, model_args=dict(img_size=32, depth=4))
    result = eval_linear.main(["--model", str(run), "--data", str(folder), "--protocol", "dino", "--epochs", "2",
                               "--batch-size", "12", "--out", str(tmp_path / "lin"), "--workers", "0"])
    assert result["features"] == "cls_last4" and result["feature_dim"] == 4 * 192  # DINO ViT-S: last 4 [CLS]
    assert result["augment"] is True and result["lr"] == pytest.approx(0.001 * 12 / 256)


def test_synthetic_data_goes_through_the_trainer_contract(tmp_path, resnet_weights):
    """`--data synthetic` on the real training.data: the split eval_knn embeds is the seeded subset (randperm of
    the split, seed + 1 for test) of the synthetic train / test images rendered at the model's 32 px with seed 0,
    as uint8 (3, 32, 32) tensors through timm's eval transform (the PIL route, as for an ImageFolder); the
    shape labels. Checked against images rendered here with training.data.synthetic.render / labels and the
    transform applied to PIL images, then the kNN top-1 (k = 1, 5, 20) against the hand kNN over a plain forward."""
    from clzoo.features import eval_transform
    from training.data.synthetic import CLASSES, labels, render
    from training.eval_common import load_split
    path, model = resnet_weights
    cfg = timm.data.resolve_model_data_config(model) | {"input_size": (3, 32, 32)}  # --img-size 32
    tf = create_transform(**cfg)
    to_pil = lambda x: Image.fromarray(x.permute(1, 2, 0).numpy())  # noqa: E731
    n = {"train": 100, "test": 50}
    expected = {}
    for split, size in (("train", 10_000), ("test", 2_000)):  # the synthetic splits' sizes
        g = torch.Generator().manual_seed(0 + (split == "test"))  # --seed 0
        idx = torch.randperm(size, generator=g)[:n[split]].sort().values
        images = render(idx, 32, seed=0, split=split)
        assert images.dtype == torch.uint8 and images.shape == (n[split], 3, 32, 32)
        x = torch.stack([tf(to_pil(im)) for im in images])
        expected[split] = x, labels(idx, 0, split)
        ds = load_split("synthetic", split, eval_transform(cfg), 32, 0, n[split])  # as eval_knn.main does
        assert len(ds) == n[split] and torch.equal(torch.as_tensor(ds.targets), expected[split][1])
        got = torch.stack([ds[i][0] for i in range(len(ds))])
        assert torch.allclose(got, x) and [ds[i][1] for i in range(len(ds))] == expected[split][1].tolist()
    result = eval_knn.main(["--model", "resnet18", "--weights", str(path), "--img-size", "32", "--data", "synthetic",
                            "--k", "1", "5", "20", "--report-k", "5", "--train-samples", "100", "--test-samples", "50",
                            "--out", str(tmp_path), "--workers", "0"])
    with torch.no_grad():
        bank, test = model(expected["train"][0]), model(expected["test"][0])
    for k in (1, 5, 20):
        top1 = hand_knn_top1(bank, expected["train"][1], test, expected["test"][1], k, 0.07, len(CLASSES))
        assert result["top1_per_k"][str(k)] == pytest.approx(top1, abs=1e-6), k
    assert result["num_classes"] == len(CLASSES) and (result["num_train"], result["num_test"]) == (100, 50)


def test_eval_knn_synthetic_nuisance_target(resnet_weights, tmp_path):
    """`--target bg_colour` scores the encoder on the background's colour octant instead of the shape: a
    random-init ResNet already separates background colours (half-width ResNet-18 at 16 px: 0.85 on the
    full split, against 0.107 for the shape), so it is far above the 8 octants' chance here."""
    path, _ = resnet_weights
    common = ["--model", "resnet18", "--weights", str(path), "--img-size", "32", "--data", "synthetic", "--k", "10",
              "--train-samples", "400", "--test-samples", "200", "--workers", "0"]
    colour = eval_knn.main([*common, "--target", "bg_colour", "--out", str(tmp_path / "bg")])
    shape = eval_knn.main([*common, "--out", str(tmp_path / "shape")])
    assert colour["target"] == "bg_colour" and colour["num_classes"] == 8 and shape["num_classes"] == 10
    assert colour["top1"] > 0.5 and colour["top1"] > shape["top1"] + 0.2
    with pytest.raises(ValueError, match="synthetic dataset only"):
        eval_knn.main([*common, "--data", str(tmp_path), "--target", "fg_colour", "--out", str(tmp_path / "x")])
