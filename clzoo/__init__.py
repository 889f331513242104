"""clzoo: contrastive and self-supervised vision encoders as timm models.

    >>> import clzoo
    >>> model = clzoo.create_model("dino_vits16", pretrained=True)   # a timm VisionTransformer
    >>> clzoo.list_pretrained("mocov*")
"""

__version__ = "0.1.0"

from . import models as _models  # noqa: F401  (registers every entry in timm's registry)
from ._builder import CheckpointMismatchError, check_state_dict
from ._factory import create_model
from ._pretrained import DownloadError, HashMismatchError, convert_file, download, get_cache_dir
from ._registry import (ManualDownloadError, NoPretrainedWeightsError, UnknownModelError, get_pretrained_cfg, get_weights_info,
                        list_aliases, list_methods, list_models, list_pretrained, model_info)
from ._serialization import UnsafeCheckpointError, load_checkpoint_file
from .convert import ConversionError, convert_checkpoint, list_formats
from .knn import knn_accuracy, knn_classify
from .pretraining import NoHeadsError, PretrainingCheckpoint, load_pretraining_checkpoint
from .hub import HubError, push_to_hub
from .attention import attention_maps, attention_masks, attention_rollout
from .features import Embeddings, SimpleFeaturePyramid, extract_features, load_encoder, load_features
from .detection import detection_backbone

__all__ = [
    "create_model", "list_models", "list_pretrained", "get_pretrained_cfg", "model_info", "list_aliases",
    "list_methods", "get_weights_info", "convert_file", "convert_checkpoint", "list_formats", "download",
    "get_cache_dir", "load_checkpoint_file", "check_state_dict", "knn_classify", "knn_accuracy",
    "UnknownModelError", "NoPretrainedWeightsError", "ManualDownloadError", "CheckpointMismatchError", "UnsafeCheckpointError",
    "ConversionError", "DownloadError", "HashMismatchError", "load_pretraining_checkpoint", "PretrainingCheckpoint", "NoHeadsError",
    "extract_features", "load_features", "load_encoder", "Embeddings", "SimpleFeaturePyramid",
    "detection_backbone",
    "attention_maps", "attention_masks", "attention_rollout", "push_to_hub", "HubError",
]
