"""Shared cfg records, evaluation protocols and method metadata for the family modules."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .._registry import MethodInfo, Metric, register_method

# ---------------------------------------------------------------------------------------------
# Methods of the contrastive-learning lineage (papers and official code).

METHODS = {
    "instdisc": MethodInfo("InstDisc", "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
                           "Wu, Xiong, Yu, Lin", "CVPR 2018", "1805.01978",
                           "https://github.com/zhirongw/lemniscate.pytorch"),
    "invaspread": MethodInfo("InvaSpread", "Unsupervised Embedding Learning via Invariant and Spreading "
                             "Instance Feature", "Ye, Zhang, Yuen, Chang", "CVPR 2019", "1904.03436",
                             "https://github.com/mangye16/Unsupervised_Embedding_Learning"),
    "cpc": MethodInfo("CPC", "Representation Learning with Contrastive Predictive Coding",
                      "van den Oord, Li, Vinyals", "arXiv 2018", "1807.03748", ""),
    "cpcv2": MethodInfo("CPC v2", "Data-Efficient Image Recognition with Contrastive Predictive Coding",
                        "Hénaff, Srinivas, De Fauw, Razavi, Doersch, Eslami, van den Oord", "ICML 2020",
                        "1905.09272", ""),
    "cmc": MethodInfo("CMC", "Contrastive Multiview Coding", "Tian, Krishnan, Isola", "ECCV 2020", "1906.05849",
                      "https://github.com/HobbitLong/CMC"),
    "mocov1": MethodInfo("MoCo v1", "Momentum Contrast for Unsupervised Visual Representation Learning",
                         "He, Fan, Wu, Xie, Girshick", "CVPR 2020", "1911.05722",
                         "https://github.com/facebookresearch/moco"),
    "mocov2": MethodInfo("MoCo v2", "Improved Baselines with Momentum Contrastive Learning",
                         "Chen, Fan, Girshick, He", "arXiv 2020", "2003.04297",
                         "https://github.com/facebookresearch/moco"),
    "mocov3": MethodInfo("MoCo v3", "An Empirical Study of Training Self-Supervised Vision Transformers",
                         "Chen, Xie, He", "ICCV 2021", "2104.02057", "https://github.com/facebookresearch/moco-v3"),
    "simclr": MethodInfo("SimCLR", "A Simple Framework for Contrastive Learning of Visual Representations",
                         "Chen, Kornblith, Norouzi, Hinton", "ICML 2020", "2002.05709",
                         "https://github.com/google-research/simclr"),
    "simclrv2": MethodInfo("SimCLR v2", "Big Self-Supervised Models are Strong Semi-Supervised Learners",
                           "Chen, Kornblith, Swersky, Norouzi, Hinton", "NeurIPS 2020", "2006.10029",
                           "https://github.com/google-research/simclr"),
    "swav": MethodInfo("SwAV", "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
                       "Caron, Misra, Mairal, Goyal, Bojanowski, Joulin", "NeurIPS 2020", "2006.09882",
                       "https://github.com/facebookresearch/swav"),
    "deepclusterv2": MethodInfo("DeepCluster-v2", "Unsupervised Learning of Visual Features by Contrasting "
                                "Cluster Assignments (DeepCluster-v2 is introduced there)",
                                "Caron, Misra, Mairal, Goyal, Bojanowski, Joulin", "NeurIPS 2020", "2006.09882",
                                "https://github.com/facebookresearch/swav"),
    "selav2": MethodInfo("SeLa-v2", "Unsupervised Learning of Visual Features by Contrasting Cluster "
                         "Assignments (SeLa-v2 is introduced there)",
                         "Caron, Misra, Mairal, Goyal, Bojanowski, Joulin", "NeurIPS 2020", "2006.09882",
                         "https://github.com/facebookresearch/swav"),
    "infomin": MethodInfo("InfoMin", "What Makes for Good Views for Contrastive Learning?",
                          "Tian, Sun, Poole, Krishnan, Schmid, Isola", "NeurIPS 2020", "2005.10243",
                          "https://github.com/HobbitLong/PyContrast"),
    "pirl": MethodInfo("PIRL", "Self-Supervised Learning of Pretext-Invariant Representations",
                       "Misra, van der Maaten", "CVPR 2020", "1912.01991", "https://github.com/facebookresearch/vissl"),
    "byol": MethodInfo("BYOL", "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
                       "Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot, "
                       "Kavukcuoglu, Munos, Valko", "NeurIPS 2020", "2006.07733",
                       "https://github.com/deepmind/deepmind-research/tree/master/byol"),
    "simsiam": MethodInfo("SimSiam", "Exploring Simple Siamese Representation Learning", "Chen, He", "CVPR 2021",
                          "2011.10566", "https://github.com/facebookresearch/simsiam"),
    "barlowtwins": MethodInfo("Barlow Twins", "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
                              "Zbontar, Jing, Misra, LeCun, Deny", "ICML 2021", "2103.03230",
                              "https://github.com/facebookresearch/barlowtwins"),
    "dino": MethodInfo("DINO", "Emerging Properties in Self-Supervised Vision Transformers",
                       "Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin", "ICCV 2021", "2104.14294",
                       "https://github.com/facebookresearch/dino"),
}
for _key, _info in METHODS.items():
    register_method(_key, _info)

# ---------------------------------------------------------------------------------------------
# Evaluation protocols behind the reported numbers (methods.md §1.4). Numbers are only comparable
# under the same protocol, so every Metric carries one.

LINEAR = {
    "moco": "ImageNet-1k linear probe on frozen pooled features: SGD lr 30, batch 256, 100 ep, lr x0.1 at "
            "60/80, wd 0 (moco main_lincls.py)",
    "mocov3": "ImageNet-1k linear probe: SGD, base lr 0.1 (ViT: 3) x batch/256, batch 1024, 90 ep, cosine, "
              "wd 0 (moco-v3 main_lincls.py)",
    "simclr": "ImageNet-1k linear head trained during pretraining on stop-gradient features (SimCLR README)",
    "simclrv2": "ImageNet-1k linear evaluation, SimCLR v2 README table (Nesterov SGD, batch 4096, 90 ep)",
    "swav": "ImageNet-1k linear probe: SGD lr 0.3, batch 256, 100 ep, cosine, wd 1e-6 (swav eval_linear.py)",
    "byol": "ImageNet-1k linear probe: SGD-Nesterov 0.9, base lr 0.2, 80 ep (byol configs/eval.py)",
    "simsiam": "ImageNet-1k linear probe: LARS, batch 4096, base lr 0.1 x batch/256, 90 ep, cosine, wd 0 "
               "(simsiam main_lincls.py)",
    "barlowtwins": "ImageNet-1k linear probe: SGD lr 0.3, batch 256, 100 ep, cosine, wd 1e-6 "
                   "(barlowtwins evaluate.py)",
    "dino": "ImageNet-1k linear probe: SGD lr 0.001 x batch/256, 100 ep, cosine, wd 0; ViT-S: concatenated "
            "CLS of the last 4 blocks, ViT-B: CLS + average-pooled patch tokens (dino eval_linear.py)",
    "pycontrast": "ImageNet-1k linear probe: SGD lr 30, 60 ep, x0.2 at 30/40/50, wd 0 (PyContrast)",
    "vissl": "ImageNet-1k linear probe on res5 features (VISSL benchmark, PIRL model zoo)",
    "instdisc": "ImageNet-1k linear classifier on pooled features (lemniscate.pytorch README)",
}
KNN = {
    "dino": "ImageNet-1k weighted 20-NN, T=0.07, teacher features (dino eval_knn.py)",
    "instdisc": "ImageNet-1k weighted kNN (k=200, T=0.07) against the memory bank (lemniscate.pytorch README)",
}


def linear(value: float, protocol: str, source: str = "README") -> Metric:
    return Metric("imagenet_linear_top1", value, LINEAR.get(protocol, protocol), source)


def knn(value: float, protocol: str, source: str = "README") -> Metric:
    return Metric("imagenet_knn_top1", value, KNN.get(protocol, protocol), source)


# ---------------------------------------------------------------------------------------------
# cfg records: timm PretrainedCfg fields + clzoo WeightsInfo fields (split by register_cfgs).

def resnet_cfg(url: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
    """Official PyTorch evaluation: Resize(256) + CenterCrop(224), bilinear, ImageNet mean/std."""
    return dict(dict(url=url, num_classes=0, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                     interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                     first_conv="conv1", classifier="fc"), **kwargs)


def vit_cfg(url: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
    """DINO / MoCo v3 evaluation: Resize(256, bicubic) + CenterCrop(224), ImageNet mean/std."""
    return dict(dict(url=url, num_classes=0, input_size=(3, 224, 224), pool_size=None, crop_pct=0.875,
                     interpolation="bicubic", fixed_input_size=True, mean=IMAGENET_DEFAULT_MEAN,
                     std=IMAGENET_DEFAULT_STD, first_conv="patch_embed.proj", classifier="head"), **kwargs)


def tf_resnet_cfg(url: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
    """SimCLR TF checkpoints take RGB in [0, 1] without mean/std; bicubic, crop 0.875 (data_util.py)."""
    kwargs.setdefault("mean", (0.0, 0.0, 0.0))
    kwargs.setdefault("std", (1.0, 1.0, 1.0))
    kwargs.setdefault("interpolation", "bicubic")
    return resnet_cfg(url, **kwargs)


def with_training_only_cfg(kwargs: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
    """`kwargs` with a pretrained cfg for an architecture without released weights (cmc_resnet18,
    cpc_encoder): timm passes pretrained_cfg=None and would warn that there is none; a run's export
    (local-dir:) brings its own, which is kept."""
    if kwargs.get("pretrained_cfg") is None:
        kwargs["pretrained_cfg"] = {**dict(num_classes=0, input_size=(3, 224, 224), mean=(0.485, 0.456, 0.406),
                                           std=(0.229, 0.224, 0.225), classifier="fc"), **fields}
    return kwargs


def paper_fields(method: str) -> Dict[str, Any]:
    info = METHODS[method]
    return dict(method=method, paper_name=info.paper, paper_ids=f"arXiv:{info.arxiv}", origin_url=info.code)


# ---------------------------------------------------------------------------------------------
# HobbitLong/PyContrast model zoo (docs/MODEL_ZOO.md): InfoMin and PyContrast's re-implementations of
# InsDis, CMC, MoCo, PIRL and MoCo v2, shared through two Dropbox folders. The README links only the
# folders; the per-file links below point into the R50 folder and are the ones third-party loaders use
# (e.g. linusericsson/ssl-transfer). Files without one are named inside their folder (`folder_file`).

PYCONTRAST_CODE = "https://github.com/HobbitLong/PyContrast"
PYCONTRAST_R50_FOLDER = "https://www.dropbox.com/sh/87d24jqsl6ra7t2/AABdDXZZBTnMQCBrg1yrQKVCa?dl=0"
PYCONTRAST_ARCH_FOLDER = "https://www.dropbox.com/sh/fit1szeqf4kiwob/AADIgPT4EItaMOtGCunBfWXCa?dl=0"
_DROPBOX_R50 = "https://www.dropbox.com/sh/87d24jqsl6ra7t2/"
PYCONTRAST_FILE_URLS = {
    "InsDis.pth": _DROPBOX_R50 + "AACcsSIt1_Njv7GsmsuzZ6Sta/InsDis.pth?dl=1",
    "CMC.pth": _DROPBOX_R50 + "AACYcqgM-lcG3__QIbxuM2Koa/CMC.pth?dl=1",
    "MoCo.pth": _DROPBOX_R50 + "AAB53yJAYuCrOFluygBsVKOOa/MoCo.pth?dl=1",
    "PIRL.pth": _DROPBOX_R50 + "AADN4jKnvTI0U5oT6hTmQZz8a/PIRL.pth?dl=1",
    "MoCov2.pth": _DROPBOX_R50 + "AABaYuKiiZFYowa31yKeGGOQa/MoCov2.pth?dl=1",
    "InfoMin_200.pth": _DROPBOX_R50 + "AACgeWc3nQ4P4zUh48KWqhxBa/InfoMin_200.pth?dl=1",
    "InfoMin_800.pth": _DROPBOX_R50 + "AAAzMTynP3Qc8mIE4XWkgILUa/InfoMin_800.pth?dl=1",
}
# options/base_options.py: SGD, momentum 0.9, wd 1e-4, 65536 negatives, softmax-CE; per method
# `override_dict` sets view(s), jigsaw branch, memory, augmentation, head and temperature.
PYCONTRAST_RECIPE = "SGD lr 0.03, momentum 0.9, wd 1e-4, batch 256, lr x0.1 at 120/160; 65536 negatives, softmax-CE; "


def pycontrast_cfg(method: str, filename: str, backbone: str, recipe: str, top1: Optional[float] = None,
                   epochs: int = 200, batch_size: int = 256, weights_format: str = "pycontrast",
                   folder: str = PYCONTRAST_R50_FOLDER, notes: str = "", **kwargs: Any) -> Dict[str, Any]:
    """A PyContrast release: its per-file link where one is known, else its folder and file name."""
    url = PYCONTRAST_FILE_URLS.get(filename)
    where = f"{filename} in the PyContrast Dropbox folder {folder}"
    return resnet_cfg(url or folder, license="bsd-2-clause", backbone=backbone, weights_format=weights_format,
                      folder_file=None if url else filename, epochs=epochs, batch_size=batch_size,
                      recipe=recipe, metrics=(linear(top1, "pycontrast"),) if top1 is not None else (),
                      notes="; ".join(n for n in (where, notes) if n),
                      **dict(paper_fields(method), origin_url=PYCONTRAST_CODE), **kwargs)


class TrunkWrapper(nn.Module):
    """The timm classifier API of clzoo's wrappers around a timm trunk (cpc_encoder, head_classifier): a
    subclass sets `num_features` and defines `pooled(features)`; the head is dropout and the `fc` classifier."""

    def init_classifier(self, num_features: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pooled(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
