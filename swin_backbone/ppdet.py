"""PaddleDetection registration: `import swin_backbone.ppdet` makes `SwinBackbone` usable in configs.

PaddleDetection already registers a `SwinTransformer` of its own, so ours is registered as `SwinBackbone`.
The authors' Cascade Mask R-CNN heads (swin_backbone/ppdet_cascade.py) are registered as `CascadeConvFCHead`
and `CascadeFCNMaskHead`.
"""
import sys
from typing import Dict, List, Optional, Sequence

import paddle

from ._load_order import zlib_is_sound

# paddledet imports lap (for tracking heads) when installed; lap and pyclipper are Cython modules that
# decompress their strings with zlib at import, which segfaults where paddle's zlib clash could not be
# repaired (see _load_order.py). Nothing on the detection path needs them: there, stop their import
# (paddledet then only warns), unless the process already has them.
if not zlib_is_sound():
    for _name in ("lap", "pyclipper"):
        sys.modules.setdefault(_name, None)

# paddledet 2.6's RPN indexes 0-D tensors that Paddle 2.6 no longer makes 1-D unless told to.
paddle.set_flags({"FLAGS_set_to_1d": True})

from ppdet.core.workspace import global_config, register, serializable  # noqa: E402
from ppdet.modeling.shape_spec import ShapeSpec  # noqa: E402

from .blocks import pad_to_multiple  # noqa: E402
from .convert import load_pretrained  # noqa: E402
from .model import SwinTransformer  # noqa: E402
from .ppdet_cascade import CascadeConvFCHead, CascadeFCNMaskHead  # noqa: E402

__all__ = ["SwinBackbone", "CascadeConvFCHead", "CascadeFCNMaskHead"]


class SwinBackbone(SwinTransformer):
    """Our SwinTransformer with PaddleDetection's interface: takes `inputs['image']`, has `out_shape`.

    `pretrained` may name an authors' `.pth` or a converted `.pdparams` (backbone keys); mismatches are
    printed. PaddleDetection's FPN upsamples by exactly 2, so its levels need sizes that halve evenly: the
    readers pad batches to a multiple of 32 (PadBatch), and `size_divisor` pads a direct call the same way
    (zeros on the right/bottom, so box coordinates do not move).
    """

    __shared__: List[str] = []

    def __init__(self, pretrain_img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.2, ape: bool = False, patch_norm: bool = True,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1, use_checkpoint: bool = False,
                 pretrained: Optional[str] = None, size_divisor: int = 32):
        super().__init__(pretrain_img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size,
                         mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate, ape,
                         patch_norm, out_indices, frozen_stages, use_checkpoint)
        self.size_divisor = size_divisor
        if pretrained:
            load_pretrained(self, pretrained)

    def forward(self, inputs: Dict[str, paddle.Tensor]) -> List[paddle.Tensor]:
        image = inputs["image"]
        if self.size_divisor:
            image = pad_to_multiple(image, self.size_divisor, "NCHW")
        return SwinTransformer.forward(self, image)  # explicit: dy2static rewrites lose super()'s cell

    @property
    def out_shape(self) -> List[ShapeSpec]:
        return [ShapeSpec(channels=c, stride=s) for c, s in zip(self.out_channels, self.out_strides)]


if not zlib_is_sound():
    import warnings

    warnings.warn("paddle was imported before swin_backbone and its zlib clash could not be repaired here: PNG "
                  "files and other zlib users can fail or crash in this process. Import swin_backbone before paddle.")

# Registering twice raises in PaddleDetection (e.g. after importlib.reload): keep the first registration.
if SwinBackbone.__name__ not in global_config:
    SwinBackbone = register(serializable(SwinBackbone))
for _head in (CascadeConvFCHead, CascadeFCNMaskHead):
    if _head.__name__ not in global_config:
        register(_head)
