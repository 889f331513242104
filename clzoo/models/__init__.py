"""clzoo's encoder families. Importing a module registers its entries in timm's registry."""
from . import _common  # noqa: F401  (method metadata first)
from . import barlowtwins, byol, classifier, cmc, cpc, dino, infomin, instdisc, moco, mocov3, pirl, simclr, simsiam, swav  # noqa: F401
