"""Swin Transformer for Paddle: a multi-scale backbone, a classifier, presets and a checkpoint converter.

`import swin_backbone.ppdet` / `import swin_backbone.paddleseg` register the backbone with
PaddleDetection / PaddleSeg; this package itself needs only Paddle.
"""
from . import _load_order  # noqa: F401  (keeps libz.so.1 whole whether or not paddle came first)
from . import _cpu_tuning  # noqa: F401  (must run before Paddle's first matmul)
from . import runtime  # noqa: F401  (swin_backbone.runtime.set_num_threads, as the README says)
from .convert import ConversionReport, convert_state_dict, extract_state_dict, load_pretrained
from .errors import CheckpointKeyError, CheckpointShapeError, MalformedFileError, SwinInputError, UnsafeFileError
from .model import SwinClassifier, SwinTransformer
from .presets import (PRESETS, create_backbone, create_classifier, preset_args, swin_base_patch4_window7_224,
                      swin_base_patch4_window12_384, swin_large_patch4_window7_224,
                      swin_large_patch4_window12_384, swin_small_patch4_window7_224,
                      swin_tiny_patch2_window4_32, swin_tiny_patch4_window7_224)
from .safe_load import check_pickle_file, load_pickle_file, read_torch_checkpoint

__version__ = "0.1.0"
__all__ = ["SwinTransformer", "SwinClassifier", "PRESETS", "preset_args", "create_backbone", "create_classifier",
           "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
           "swin_base_patch4_window12_384", "swin_large_patch4_window7_224", "swin_large_patch4_window12_384",
           "swin_tiny_patch2_window4_32", "ConversionReport", "convert_state_dict", "extract_state_dict",
           "load_pretrained", "read_torch_checkpoint", "load_pickle_file", "check_pickle_file", "SwinInputError",
           "UnsafeFileError", "MalformedFileError", "CheckpointKeyError", "CheckpointShapeError"]
