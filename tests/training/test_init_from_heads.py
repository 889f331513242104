"""`--init-from` with the official SSL heads: after the trainer builds the method from an official file,
its heads compute what the official head modules compute, its momentum / teacher network is the file's
target (not a copy of the online one), and DINO's center / MoCo's queue are the file's.

The official files are those of tests/test_parity.py: written in the released layouts (exact keys) from
reference modules independent of clzoo, with narrowed heads (the configured hparams match them) and
ViTs of depth 2 at 32 px. BYOL's is the Haiku pickle of tests/test_convert_byol.py and SimCLR v2's the
TF variables of tests/test_convert_tf.py, compared with the outputs of the official Haiku / TF code. The
method is built with the trainer's own `initial_method` (the step before training); CLI runs cover the
error exit, one training step and --resume.
"""
import json
import os
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.helpers import resnet_reference, vit_reference
from tests.test_parity import built, max_diff, rgb
from training import pretrain
from training.config import ConfigError, load_config
from training.methods import TrainInfo

HEAD_TOL = 1e-6
BACKBONE_TOL = 1e-5  # tests/test_parity.py's tolerance for whole networks
INFO = TrainInfo(num_samples=8, total_steps=4, steps_per_epoch=2, global_batch=4, seed=0)
VIT = ["--model-args", "{depth: 2}"]
DINO_HEAD = ["--hparams.out_dim", "96", "--hparams.hidden_dim", "48", "--hparams.bottleneck_dim", "16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """test_parity case id -> its official file on disk."""
    root, out = tmp_path_factory.mktemp("official"), {}

    def get(case_id):
        if case_id not in out:
            out[case_id] = root / f"{case_id}.pth"
            torch.save(built(case_id).ckpt, out[case_id])
        return out[case_id]
    return get


def initial_method(method, case_id, files, *args, entry=None):
    """The method as `pretrain.py --method M --init-from ENTRY --init-from-file FILE ARGS` starts training."""
    cfg = load_config(["--method", method, "--init-from", entry or built(case_id).entry, "--init-from-file",
                       str(files(case_id)), "--image-size", "32", *args])
    logs = []
    return pretrain.initial_method(cfg, INFO, logs.append).eval(), logs


def embedding(n_in):
    return torch.randn(4, n_in, generator=torch.Generator().manual_seed(7))


def references(case_id, *names):
    """The official head modules test_parity wrote into the file, and an input of the first one's width."""
    any_branch = SimpleNamespace(heads=defaultdict(lambda: None))
    found = [built(case_id).heads[name](SimpleNamespace(online=any_branch, target=any_branch)) for name in names]
    return [ref.eval() for _, ref, _ in found], embedding(found[0][2])


def sub(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@torch.no_grad()
def test_dino_student_teacher_and_center_are_the_files(files):
    method, logs = initial_method("dino", "dino_full_vit", files, *VIT, *DINO_HEAD)
    ckpt = built("dino_full_vit").ckpt
    (student_head, teacher_head), z = references("dino_full_vit", "student head", "teacher head")
    assert max_diff(method.student_head(z), student_head(z)) <= HEAD_TOL
    assert max_diff(method.teacher_head(z), teacher_head(z)) <= HEAD_TOL
    x = rgb()
    teacher, student = vit_reference(sub(ckpt["teacher"], "backbone."), x, 6), \
        vit_reference(sub(ckpt["student"], "module.backbone."), x, 6)
    assert max_diff(method.backbone(x), teacher) <= BACKBONE_TOL  # the file's teacher, not the student's copy
    assert max_diff(method.student_backbone(x), student) <= BACKBONE_TOL
    assert max_diff(teacher, student) > 0.1
    assert torch.equal(method.center, ckpt["dino_loss"]["center"])
    assert "teacher_head <- official target head" in logs[-1] and "center <- official" in logs[-1]
    assert "--hparams.norm_last_layer false trains it" in logs[-1]  # the file's weight_g is not all ones


def test_a_head_of_other_hparams_names_the_head_the_shapes_and_the_hparams(files, tmp_path, capsys):
    args = ["--method", "dino", "--init-from", "dino_vits16.in1k_full", "--init-from-file",
            str(files("dino_full_vit")), "--image-size", "32", *VIT, "--output", str(tmp_path / "run"),
            "--data-args.num_samples", "8", "--batch-size", "4", "--knn.every", "0"]
    assert pretrain.main(args) == 2  # the recipe's out_dim 65536 / bottleneck 256 / hidden 2048
    err = capsys.readouterr().err
    assert "the official head 'head' does not fit dino.student_head" in err
    assert "last_layer.weight_v: official (96, 16) vs configured (65536, 256)" in err
    assert ("--hparams.out_dim 96 --hparams.hidden_dim 48 --hparams.bottleneck_dim 16 "
            "--hparams.use_bn_in_head false --hparams.norm_last_layer false") in err and "--init-heads no" in err


@torch.no_grad()
def test_init_heads_no_starts_only_the_backbone(files):
    method, logs = initial_method("dino", "dino_full_vit", files, *VIT, *DINO_HEAD, "--init-heads", "no")
    (student_head,), z = references("dino_full_vit", "student head")
    assert max_diff(method.student_head(z), student_head(z)) > 0.1  # random heads
    assert torch.equal(method.center, torch.zeros(1, 96)) and not logs
    x = rgb()  # the backbone is create_model's (DINO releases the teacher), as without heads
    assert max_diff(method.student_backbone(x), built("dino_full_vit").reference(x)) <= BACKBONE_TOL


@torch.no_grad()
def test_a_vit_file_loads_for_another_image_size_as_create_model_resamples_it(files):
    import clzoo
    method, _ = initial_method("dino", "dino_full_vit", files, *VIT, *DINO_HEAD, "--image-size", "48")
    plain = clzoo.create_model("dino_vits16.in1k_full", pretrained=True, depth=2, img_size=48,
                               pretrained_cfg_overlay=dict(file=str(files("dino_full_vit")))).eval()
    x = rgb(48)
    assert torch.equal(method.backbone(x), plain(x))


@torch.no_grad()
def test_mocov3_projector_predictor_and_momentum_encoder(files):
    method, logs = initial_method("mocov3", "mocov3_vit_small", files, *VIT, "--hparams.mlp_dim", "64",
                                  "--hparams.dim", "32")
    (proj, pred), z = references("mocov3_vit_small", "projector", "predictor")
    assert max_diff(method.predictor(method.projector(z)), pred(proj(z))) <= HEAD_TOL
    assert max_diff(method.momentum_projector(z), proj(z)) <= HEAD_TOL
    sd, x = built("mocov3_vit_small").ckpt["state_dict"], rgb()
    momentum = vit_reference(sub(sd, "module.momentum_encoder."), x, 12)
    assert max_diff(method.momentum_backbone(x), momentum) <= BACKBONE_TOL
    assert max_diff(method.backbone(x), vit_reference(sub(sd, "module.base_encoder."), x, 12)) <= BACKBONE_TOL
    assert max_diff(method.backbone(x), momentum) > 0.1
    assert "momentum_projector <- official target head" in logs[-1]


def test_mocov3_default_heads_name_mlp_dim_and_dim(files):
    with pytest.raises(ConfigError) as e:
        initial_method("mocov3", "mocov3_vit_small", files, *VIT)
    assert "'head' does not fit mocov3.projector" in str(e.value)
    assert "--hparams.mlp_dim 64 --hparams.dim 32" in str(e.value)


@torch.no_grad()
def test_swav_prototypes_on_normalised_projections(files):
    method, _ = initial_method("swav", "swav", files, "--hparams.hidden_mlp", "64", "--hparams.dim", "16",
                               "--hparams.nmb_prototypes", "30")
    (proj, prototypes), z = references("swav", "projection_head", "prototypes")
    assert max_diff(method.projector(z), proj(z)) <= HEAD_TOL
    # main_swav.py normalises the prototypes before every forward, the first one after loading too
    want = F.linear(F.normalize(proj(z), dim=1), F.normalize(prototypes.weight, dim=1))
    assert max_diff(method.prototypes(F.normalize(method.projector(z), dim=1)), want) <= HEAD_TOL


@torch.no_grad()
def test_simsiam_projector_with_the_frozen_bias_folded_and_predictor(files):
    method, _ = initial_method("simsiam", "simsiam", files, "--hparams.dim", "32", "--hparams.pred_dim", "16",
                               "--hparams.proj_hidden_dim", "64")
    (proj, pred), z = references("simsiam", "projector", "predictor")
    assert proj[6].bias.abs().min() > 0  # the official Linear before the affine-free BN has a bias
    assert max_diff(method.projector(z), proj(z)) <= HEAD_TOL
    assert max_diff(method.predictor(method.projector(z)), pred(proj(z))) <= HEAD_TOL


@torch.no_grad()
def test_deepclusterv2_prototypes_and_barlowtwins_projector(files):
    method, _ = initial_method("deepclusterv2", "deepclusterv2", files, "--hparams.hidden_mlp", "64",
                               "--hparams.dim", "16", "--hparams.nmb_prototypes", "[30,30,30]")
    (proj, prototypes), z = references("deepclusterv2", "projection_head", "prototypes")
    assert max_diff(method.projector(z), proj(z)) <= HEAD_TOL
    p = method.projector(z)
    assert max_diff(torch.stack([head(p) for head in method.prototypes]), prototypes(p)) <= HEAD_TOL
    method, logs = initial_method("barlowtwins", "barlowtwins_full", files, "--hparams.proj_dims", "[64,64,64]")
    (proj,), z = references("barlowtwins_full", "projector")
    assert max_diff(method.projector(z), proj(z)) <= HEAD_TOL
    assert logs[-1].endswith("official bn: not used by barlowtwins")


@torch.no_grad()
def test_selav2_continues_from_the_official_heads(files):
    """SeLa-v2's file (swav repo): DeepCluster-v2's MultiPrototypes layout, or SwAV's single prototypes."""
    method, _ = initial_method("selav2", "deepclusterv2", files, "--hparams.hidden_mlp", "64", "--hparams.dim", "16",
                               "--hparams.nmb_prototypes", "[30,30,30]", entry="selav2_resnet50.400ep")
    (proj, prototypes), z = references("deepclusterv2", "projection_head", "prototypes")
    p = method.projector(z)
    assert max_diff(p, proj(z)) <= HEAD_TOL
    official = prototypes(p)
    for head, ref, w in zip(method.prototypes, official, prototypes.parameters()):  # ours: re-normalised
        assert max_diff(head(p), ref / w.norm(dim=1)) <= HEAD_TOL
    with pytest.raises(Exception, match="nmb_prototypes"):
        initial_method("selav2", "deepclusterv2", files, "--hparams.hidden_mlp", "64", "--hparams.dim", "16",
                       "--hparams.nmb_prototypes", "[20,20,20]", entry="selav2_resnet50.400ep")


def _moco_fc(sd, prefix):
    """main_moco.py --mlp's fc, built from the file's keys."""
    fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 128))
    fc.load_state_dict(sub(sd, prefix))
    return fc


@torch.no_grad()
def test_mocov2_key_encoder_and_queue_are_the_files(files):
    method, logs = initial_method("mocov2", "mocov2", files, "--hparams.K", "4096")
    sd, z = built("mocov2").ckpt["state_dict"], embedding(2048)
    assert max_diff(method.projector(z), _moco_fc(sd, "module.encoder_q.fc.")(z)) <= HEAD_TOL
    fc_k = _moco_fc(sd, "module.encoder_k.fc.")(z)
    assert max_diff(method.momentum_projector(z), fc_k) <= HEAD_TOL and max_diff(method.projector(z), fc_k) > 0.1
    x = rgb()
    assert max_diff(method.momentum_backbone(x), resnet_reference(sd, x, prefix="module.encoder_k.")) <= BACKBONE_TOL
    assert torch.equal(method.queue.queue, sd["module.queue"].T) and int(method.queue.ptr) == 0
    assert "queue <- official" in logs[-1]


def test_a_queue_of_another_size_is_kept_and_named(files):
    method, logs = initial_method("mocov2", "mocov2", files, "--hparams.K", "256")
    assert method.queue.queue.shape == (256, 128)
    assert "queue: not loaded, official (4096, 128) vs configured (256, 128) (--hparams.K 4096 to load it)" in logs[-1]


@pytest.fixture(scope="module")
def byol_file(tmp_path_factory):
    from tests.helpers import byol_pickle
    from tests.test_convert_byol import haiku_trees
    path = tmp_path_factory.mktemp("byol") / "pretrain_res50x1.pkl"
    (params, state), (target_params, target_state) = haiku_trees(), haiku_trees("target:")
    byol_pickle(path, params, state, target_params, target_state)
    return path


@torch.no_grad()
def test_byol_outputs_equal_the_official_haiku_code_and_the_target_is_the_files(byol_file):
    from tests.golden_values import golden_value
    from tests.test_convert_byol import GOLDEN, inputs
    cfg = load_config(["--method", "byol", "--init-from", "byol_resnet50.in1k", "--init-from-file", str(byol_file)])
    method = pretrain.initial_method(cfg, INFO, lambda line: None).double().eval()
    golden = np.load(GOLDEN / "byol_res50.npz")
    projection = method.projector(method.backbone(inputs(64, torch.float64)))
    assert np.abs(projection.numpy() - golden["projection_64"]).max() <= 1e-9
    assert np.abs(method.predictor(projection).numpy() - golden["prediction_64"]).max() <= 1e-9
    target_w = golden_value("target:projector/linear|w", (2048, 4096))  # haiku (in, out)
    assert torch.equal(method.target_projector[0].weight, torch.from_numpy(target_w).double().T)
    assert not torch.equal(method.target_backbone.conv1.weight, method.backbone.conv1.weight)


def test_without_heads_only_the_backbone_starts_from_the_file(files):
    # a backbone-only release: the message names the release with heads
    method, logs = initial_method("dino", "dino_backbone_vit", files, *VIT, *DINO_HEAD)
    assert "only the backbone is initialised" in logs[0] and "dino_vits16.in1k_full" in logs[0]
    # a file of another method
    _, logs = initial_method("mocov1", "mocov2", files, entry="mocov2_resnet50.800ep")
    assert logs == ["--init-from mocov2_resnet50.800ep: only the backbone is initialised (it was trained with "
                    "mocov2, not mocov1)"]
    with pytest.raises(ConfigError, match="--init-heads yes: the heads of mocov2_resnet50.800ep cannot be loaded"):
        initial_method("mocov1", "mocov2", files, "--init-heads", "yes", entry="mocov2_resnet50.800ep")


def test_one_step_from_the_official_checkpoint_then_resume_loads_no_official_file(files, tmp_path, monkeypatch):
    import clzoo
    run = ["--method", "mocov2", "--init-from", "mocov2_resnet50.800ep", "--init-from-file", str(files("mocov2")),
           "--hparams.K", "4096", "--image-size", "32", "--batch-size", "8", "--data-args.num_samples", "8",
           "--knn.every", "0", "--output", str(tmp_path / "run")]
    assert pretrain.main([*run, "--max-steps", "1"]) == 0
    queue = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["method"]["queue.queue"]
    official = built("mocov2").ckpt["state_dict"]["module.queue"].T
    assert torch.equal(queue[8:], official[8:]) and not torch.equal(queue[:8], official[:8])  # 8 keys enqueued

    def no_official_file(*args, **kwargs):
        raise AssertionError("--resume must not read the official checkpoint")
    create_model = clzoo.create_model

    def architecture_only(*args, pretrained=False, **kwargs):
        assert not pretrained, "--resume must not read init_from's weights: the checkpoint replaces them"
        return create_model(*args, pretrained=pretrained, **kwargs)
    monkeypatch.setattr(clzoo, "load_pretraining_checkpoint", no_official_file)
    monkeypatch.setattr(clzoo, "create_model", architecture_only)
    assert pretrain.main([*run, "--max-steps", "2", "--resume", str(tmp_path / "run")]) == 0
    assert json.load(open(os.path.join(tmp_path, "run", "results.json")))["steps"] == 2


@pytest.fixture(scope="module")
def simclrv2_file(tmp_path_factory):
    from tests.test_convert_tf import tf_variables
    path = tmp_path_factory.mktemp("simclr") / "model.ckpt-250228.npz"  # {TF variable name: array}
    np.savez(path, **tf_variables("r50_1x_sk0", optimizer_slots=False))
    return path


@torch.no_grad()
def test_simclrv2_projection_equals_the_official_tf_code(simclrv2_file):
    from tests.test_convert_tf import GOLDEN, features
    args = ["--method", "simclrv2", "--init-from", "simclrv2_resnet50.in1k", "--init-from-file", str(simclrv2_file)]
    with pytest.raises(ConfigError) as e:  # TF's last BN has a scale; a head configured without one
        pretrain.initial_method(load_config([*args, "--hparams.proj_last_bn_scale", "false"]), INFO)
    assert "7.weight: not in the configured module" in str(e.value)
    assert "--hparams.proj_last_bn_scale true" in str(e.value)
    method = pretrain.initial_method(load_config(args), INFO).double()  # the default: TF's head
    projection = features(nn.Sequential(method.backbone, method.projector), 64, torch.float64)
    assert np.abs(projection - np.load(GOLDEN / "simclr_r50_1x_sk0.npz")["projection_64"]).max() <= 1e-9
    assert not method.projector[-1].bias.requires_grad and not method.projector[-1].bias.any()  # no beta


@torch.no_grad()
def test_cmc_continues_from_the_pycontrast_file(files):
    """--method cmc --init-from cmc_resnet50half.pycontrast: the backbone is the file's Y / DbDr encoders (on the
    trainer's ImageNet-normalised views), with a fresh fc -> 128 per view and fresh memory banks."""
    method, logs = initial_method("cmc", "pycontrast_cmc_ydbdr", files)
    assert method.backbone.colour == "ydbdr" and len(method.projectors) == 2
    x = rgb()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert max_diff(method.backbone((x - mean) / std), built("pycontrast_cmc_ydbdr").reference(x)) <= BACKBONE_TOL
    assert "only the backbone is initialised" in logs[-1]
