"""The baseline side of the benchmarks: each method as lightly's own example trains it
(lightly-ai/lightly examples/pytorch/<method>.py), built from lightly's heads, losses and momentum update,
on the backbone clzoo's side uses (a copy of the same timm model) and with the head sizes `BENCH_HEADS`
gives both sides. One `step(views, epoch)` is the body of the example's loop: momentum update, forward of
each view, loss, backward, optimizer step, zero_grad."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

# Head sizes of lightly's examples for a 512-d ResNet-18 (DINO: a 192-d ViT-tiny), and the clzoo hparams that
# give clzoo's trainer the same heads.
BENCH_HEADS = {
    "simclr": ["--hparams.proj_hidden_dim", "512", "--hparams.proj_dim", "128", "--hparams.proj_layers", "2",
               "--hparams.tau", "0.5"],
    "mocov2": ["--hparams.K", "4096", "--hparams.dim", "128", "--hparams.tau", "0.2"],
    "byol": ["--hparams.hidden_dim", "1024", "--hparams.dim", "256"],
    "swav": ["--hparams.dim", "128", "--hparams.hidden_mlp", "512", "--hparams.nmb_prototypes", "512",
             "--hparams.freeze_prototypes_epochs", "0"],
    "barlowtwins": ["--hparams.proj_dims", "[2048,2048,2048]"],
    "dino": ["--hparams.out_dim", "2048", "--hparams.hidden_dim", "512", "--hparams.bottleneck_dim", "64",
             "--hparams.freeze_last_layer", "0"],
}


class _Base(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def embed(self, x):
        return self.backbone(x).flatten(start_dim=1)

    def make_optimizer(self, name: str, lr: float, weight_decay: float):
        params = [p for p in self.parameters() if p.requires_grad]
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)

    def step(self, views, epoch: int, optimizer, momentum: float = 0.996) -> float:
        loss = self.loss(views, epoch, momentum)
        loss.backward()
        self.after_backward(epoch)
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.detach())

    def after_backward(self, epoch: int) -> None:
        pass


class SimCLR(_Base):
    def __init__(self, backbone, dim: int):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        super().__init__(backbone)
        self.projection_head = SimCLRProjectionHead(dim, 512, 128)
        self.criterion = NTXentLoss(temperature=0.5)

    def loss(self, views, epoch, momentum):
        z0, z1 = (self.projection_head(self.embed(x)) for x in views[:2])
        return self.criterion(z0, z1)


class _Momentum(_Base):
    def momentum_pairs(self):
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def _copy(self):
        from lightly.models.utils import deactivate_requires_grad
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def update(self, m):
        from lightly.models.utils import update_momentum
        for online, target in self.momentum_pairs():
            update_momentum(online, target, m=m)

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


class MoCoV2(_Momentum):
    def __init__(self, backbone, dim: int):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        super().__init__(backbone)
        self.projection_head = MoCoProjectionHead(dim, 512, 128)
        self._copy()
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))

    def loss(self, views, epoch, momentum):
        self.update(0.999)
        query = self.projection_head(self.embed(views[0]))
        key = self.forward_momentum(views[1])
        return self.criterion(query, key)


class BYOL(_Momentum):
    def __init__(self, backbone, dim: int):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        super().__init__(backbone)
        self.projection_head = BYOLProjectionHead(dim, 1024, 256)
        self.prediction_head = BYOLPredictionHead(256, 1024, 256)
        self._copy()
        self.criterion = NegativeCosineSimilarity()

    def loss(self, views, epoch, momentum):
        self.update(momentum)
        x0, x1 = views[:2]
        p0 = self.prediction_head(self.projection_head(self.embed(x0)))
        z0 = self.forward_momentum(x0)
        p1 = self.prediction_head(self.projection_head(self.embed(x1)))
        z1 = self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class SwAV(_Base):
    def __init__(self, backbone, dim: int):
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
        super().__init__(backbone)
        self.projection_head = SwaVProjectionHead(dim, 512, 128)
        self.prototypes = SwaVPrototypes(128, n_prototypes=512)
        self.criterion = SwaVLoss()

    def loss(self, views, epoch, momentum):
        self.prototypes.normalize()
        out = [self.prototypes(F.normalize(self.projection_head(self.embed(v)), dim=1, p=2)) for v in views]
        return self.criterion(out[:2], out[2:])


class BarlowTwins(_Base):
    def __init__(self, backbone, dim: int):
        from lightly.loss import BarlowTwinsLoss
        from lightly.models.modules import BarlowTwinsProjectionHead
        super().__init__(backbone)
        self.projection_head = BarlowTwinsProjectionHead(dim, 2048, 2048)
        self.criterion = BarlowTwinsLoss()

    def loss(self, views, epoch, momentum):
        z0, z1 = (self.projection_head(self.embed(x)) for x in views[:2])
        return self.criterion(z0, z1)


class DINO(_Momentum):
    def __init__(self, backbone, dim: int):
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        super().__init__(backbone)
        self.projection_head = DINOProjectionHead(dim, 512, 64, 2048, freeze_last_layer=0)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = DINOProjectionHead(dim, 512, 64, 2048)
        from lightly.models.utils import deactivate_requires_grad
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=0)

    def loss(self, views, epoch, momentum):
        self.update(momentum)
        teacher_out = [self.forward_momentum(v) for v in views[:2]]
        student_out = [self.projection_head(self.embed(v)) for v in views]
        return self.criterion(teacher_out, student_out, epoch=epoch)

    def after_backward(self, epoch):
        self.projection_head.cancel_last_layer_gradients(current_epoch=epoch)


METHODS = {"simclr": SimCLR, "mocov2": MoCoV2, "byol": BYOL, "swav": SwAV, "barlowtwins": BarlowTwins,
           "dino": DINO}


def build(method: str, backbone: nn.Module) -> _Base:
    return METHODS[method](backbone, backbone.num_features)


def transform(method: str, image_size: int, local_views: int = 0, local_size: int = 16):
    """lightly's own view transform for `method` at `image_size`, as its CIFAR-10 benchmark sets it (no blur at
    32 px), with `local_views` small crops for SwAV / DINO."""
    from lightly.transforms import (BYOLTransform, BYOLView1Transform, BYOLView2Transform, DINOTransform,
                                    MoCoV2Transform, SimCLRTransform, SwaVTransform)
    blur = 0.0 if image_size <= 64 else 0.5
    if method == "simclr":
        return SimCLRTransform(input_size=image_size, gaussian_blur=blur)
    if method == "mocov2":
        return MoCoV2Transform(input_size=image_size, gaussian_blur=blur)
    if method in ("byol", "barlowtwins"):  # lightly's Barlow Twins example uses the BYOL views
        return BYOLTransform(BYOLView1Transform(input_size=image_size, gaussian_blur=blur if blur else 0.0),
                             BYOLView2Transform(input_size=image_size, gaussian_blur=0.1 if blur else 0.0))
    if method == "swav":
        return SwaVTransform(crop_sizes=(image_size, local_size), crop_counts=(2, local_views),
                             crop_min_scales=(0.14, 0.05), crop_max_scales=(1.0, 0.14),
                             gaussian_blur=blur)
    if method == "dino":
        return DINOTransform(global_crop_size=image_size, local_crop_size=local_size, n_local_views=local_views,
                             gaussian_blur=(blur, 0.1 if blur else 0.0, blur))
    raise KeyError(method)
