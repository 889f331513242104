"""The official PyTorch checkpoint layouts (checkpoints.md §2-§16; key lists in reference/keys/)."""

from . import CheckpointFormat, convert_checkpoint, register_format

# A bare backbone state dict with torchvision/timm names, possibly under 'state_dict'/'model' and
# 'module.': DINO `*_pretrain.pth`, Barlow Twins `resnet50.pth`, clzoo/timm exports.
# The full training checkpoints released beside those files are read through their backbone: the
# backbone file IS that network. DINO: "the weights from the backbone only files are from the teacher"
# (maintainer, facebookresearch/dino#44); Barlow Twins main.py saves resnet50.pth as
# model.module.backbone.state_dict() after the last epoch's checkpoint.pth.
# version 2: full training checkpoints were converted as a state dict of their 'model' (Barlow Twins) or refused.
STATE_DICT = register_format(CheckpointFormat(
    name="state_dict",
    description="a plain backbone state dict with timm/torchvision key names",
    containers=(("state_dict",), ("model",), ()),
    drop_prefixes=("fc.", "head."),
    full_layouts=("dino_full", "barlowtwins_full"),
    version=2,
))

# facebookresearch/moco main_moco.py: {'epoch','arch','state_dict','optimizer'}; the query encoder
# is `module.encoder_q.*` with the v1 `fc` (128) or v2 `fc.0/fc.2` MLP; encoder_k/queue may be present.
MOCO = register_format(CheckpointFormat(
    name="moco",
    description="MoCo v1/v2 pretraining checkpoint (facebookresearch/moco)",
    containers=(("state_dict",),),
    keep_prefixes=("module.encoder_q.", "encoder_q."),
    drop_prefixes=("fc.",),
))

# facebookresearch/moco-v3: `module.base_encoder.*` (R50 projector in fc.*, ViT projector in head.*),
# plus momentum_encoder and predictor.
MOCOV3 = register_format(CheckpointFormat(
    name="mocov3",
    description="MoCo v3 pretraining checkpoint (facebookresearch/moco-v3)",
    containers=(("state_dict",), ("model",)),
    keep_prefixes=("module.base_encoder.", "base_encoder."),
    drop_prefixes=("fc.", "head."),
))

# facebookresearch/simsiam: `module.encoder.*` (projector in encoder.fc) and module.predictor.
SIMSIAM = register_format(CheckpointFormat(
    name="simsiam",
    description="SimSiam pretraining checkpoint (facebookresearch/simsiam)",
    containers=(("state_dict",),),
    keep_prefixes=("module.encoder.", "encoder."),
    drop_prefixes=("fc.",),
))

# facebookresearch/swav (also DeepCluster-v2 / SeLa-v2): a flat dict of `module.*` with
# projection_head and prototypes (MultiPrototypes: prototypes.prototypes{i}).
SWAV = register_format(CheckpointFormat(
    name="swav",
    description="SwAV / DeepCluster-v2 / SeLa-v2 checkpoint (facebookresearch/swav)",
    containers=(("state_dict",), ()),
    drop_prefixes=("projection_head.", "prototypes.", "fc."),
))

# facebookresearch/barlowtwins checkpoint.pth: {'epoch','model','optimizer'} with module.backbone.*,
# module.projector.*, module.bn.*
BARLOWTWINS_FULL = register_format(CheckpointFormat(
    name="barlowtwins_full",
    description="Barlow Twins full training checkpoint (facebookresearch/barlowtwins checkpoint.pth)",
    containers=(("model",),),
    keep_prefixes=("module.backbone.", "backbone."),
    backbone_format="state_dict",
))

# facebookresearch/dino *_full_checkpoint.pth: {'student','teacher','optimizer','epoch','args',
# 'dino_loss'}; the teacher is the evaluated network. ViT teachers have no DDP prefix, RN50's do.
DINO_FULL = register_format(CheckpointFormat(
    name="dino_full",
    description="DINO full training checkpoint (facebookresearch/dino *_full_checkpoint.pth)",
    containers=(("teacher",),),
    strip_prefixes=("module.", "backbone."),
    drop_prefixes=("head.", "projection_head.", "prototypes.", "fc."),
    backbone_format="state_dict",
))

# zhirongw/lemniscate.pytorch: {'epoch','arch','state_dict','lemniscate','best_prec1','optimizer'},
# where 'lemniscate' is the pickled NCEAverage module (memory bank) itself.
LEMNISCATE = register_format(CheckpointFormat(
    name="lemniscate",
    description="InstDisc checkpoint (zhirongw/lemniscate.pytorch)",
    containers=(("state_dict",),),
    drop_prefixes=("fc.",),
    stub_globals=("lib.NCEAverage.NCEAverage", "lib.LinearAverage.LinearAverage",
                  "lib.alias_multinomial.AliasMethod", "lib.NCECriterion.NCECriterion"),
))

# HobbitLong/PyContrast (InfoMin, InsDis, MoCo, PIRL, MoCov2 re-implementations):
# {'model','contrast','optimizer','epoch',('model_ema')}; model keys module.encoder.* + heads.
PYCONTRAST = register_format(CheckpointFormat(
    name="pycontrast",
    description="PyContrast checkpoint (HobbitLong/PyContrast: InfoMin, InsDis, MoCo, PIRL)",
    containers=(("model",),),
    keep_prefixes=("module.encoder.", "encoder."),
))

# facebookresearch/vissl (PIRL, NPID++, ...): classy_state_dict.base_model.model.trunk with
# `_feature_blocks.*` torchvision names.
VISSL = register_format(CheckpointFormat(
    name="vissl",
    description="VISSL checkpoint (facebookresearch/vissl model_final_checkpoint_*.torch)",
    containers=(("classy_state_dict", "base_model", "model", "trunk"), ("model_state_dict", "model", "trunk"),
                ("model", "trunk"), ("trunk",)),
    strip_prefixes=("module.", "_feature_blocks."),
    drop_prefixes=("fc.", "heads."),
))

# HobbitLong/CMC train_CMC.py: {'opt','model','contrast','optimizer','epoch',('amp')}; `model` is
# MyResNetsCMC with encoder = DataParallel(ResNetV{1,2,3}): encoder.module.{l_to_ab,ab_to_l}.*, each
# branch with its own 128-d fc (dropped). The branches keep their names in clzoo's CMCResNet.
CMC = register_format(CheckpointFormat(
    name="cmc",
    description="CMC checkpoint (HobbitLong/CMC train_CMC.py, Lab views)",
    containers=(("model",),),
    keep_prefixes=("encoder.module.", "module.encoder.module.", "encoder."),
    drop_prefixes=("l_to_ab.fc.", "ab_to_l.fc."),
))


def _pycontrast_branch(i: int) -> CheckpointFormat:
    return CheckpointFormat(name="pycontrast_cmc", description=PYCONTRAST_CMC_DESCRIPTION,
                            containers=(("model",),), keep_prefixes=(f"module.encoder{i}.", f"encoder{i}."))


# HobbitLong/PyContrast CMC (networks/build_backbone.py CMCSingleHead): model keys module.encoder1.*
# (Y) and module.encoder2.* (DbDr), heads head1/head2; encoder1 -> l_to_ab, encoder2 -> ab_to_l.
PYCONTRAST_CMC_DESCRIPTION = "PyContrast CMC checkpoint (HobbitLong/PyContrast, YDbDr views, encoder1/encoder2)"
PYCONTRAST_CMC = register_format(CheckpointFormat(
    name="pycontrast_cmc",
    description=PYCONTRAST_CMC_DESCRIPTION,
    convert_fn=lambda obj: {f"{branch}.{k}": v for i, branch in ((1, "l_to_ab"), (2, "ab_to_l"))
                            for k, v in convert_checkpoint(obj, _pycontrast_branch(i)).items()},
))
