"""clzoo: contrastive / self-supervised vision encoders as timm models (foundation in progress)."""
import timm as _timm

from .knn import knn_accuracy, knn_classify


def create_model(model_name, pretrained=False, **kwargs):
    """Temporary stand-in: the registry-backed version replaces it. Encoders default to num_classes=0."""
    kwargs.setdefault("num_classes", 0)
    return _timm.create_model(model_name, pretrained=pretrained, **kwargs)
