"""The encoder of the ResNet step-parity fixtures: torchvision's ResNet-18 with narrow stage widths, the
architecture of timm's `resnet18 --model-args.channels CHANNELS` (stem 64; a downsample in layer1 because
64 != CHANNELS[0]). The official builders call it as `base_encoder(num_classes=..., zero_init_residual=...)`."""

import torch.nn as nn
import torchvision.models.resnet as tv_resnet

CHANNELS = [8, 16, 32, 64]


class NarrowResNet18(tv_resnet.ResNet):
    """torchvision's ResNet-18 with stage widths CHANNELS instead of 64-128-256-512."""

    def __init__(self, num_classes: int = 1000, zero_init_residual: bool = False):
        self._widths = dict(zip((64, 128, 256, 512), CHANNELS))
        super().__init__(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes,
                         zero_init_residual=zero_init_residual)
        self.fc = nn.Linear(CHANNELS[-1] * tv_resnet.BasicBlock.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        return super()._make_layer(block, self._widths[planes], blocks, stride, dilate)
