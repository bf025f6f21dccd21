"""The authors' UperNet decode head and FCN auxiliary head (PaddleSeg layers), registered by `paddleseg.py`.

Exports (static graphs) compute the pyramid pooling's adaptive average pooling as two small matmuls built
from the runtime size: Paddle2ONNX converts `pool2d(adaptive=True)` only at static sizes (at runtime sizes
it writes a zero kernel that onnxruntime and OpenVINO reject), while a matmul converts everywhere.
Eager mode keeps Paddle's own kernel.
"""
from typing import List, Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.models import layers

__all__ = ["UperHead", "FCNHead", "adaptive_avg_pool2d"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Layer:
    # No conv bias before BN, as in the authors' ConvModule.
    return layers.ConvBNReLU(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias_attr=False)


def resize(x: paddle.Tensor, size) -> paddle.Tensor:
    """Bilinear resize to `size` (H, W), align_corners=False as in the authors' UperNet."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def averaging_matrix(length: paddle.Tensor, bins: int) -> paddle.Tensor:
    """[bins, length] rows that average the adaptive-pooling cells of a `length`-long axis (length: a runtime
    size): bin i covers [floor(i * L / bins), ceil((i + 1) * L / bins)), as Paddle's and PyTorch's kernels do.

    The bounds are exact in float32 (a quotient of integers below 2^24 that is not whole is at least
    1 / bins away from the next whole number).
    """
    size = length.astype("float32").reshape([1, 1])
    index = paddle.arange(bins, dtype="float32").reshape([bins, 1])
    start, end = paddle.floor(index * size / bins), paddle.ceil((index + 1) * size / bins)
    position = paddle.arange(length, dtype="float32").reshape([1, -1])
    inside = paddle.logical_and(position >= start, position < end).astype("float32")
    return inside / (end - start)


def adaptive_avg_pool2d(x: paddle.Tensor, bins: int) -> paddle.Tensor:
    """[N, C, H, W] -> [N, C, bins, bins] adaptive average pooling; in static graphs as matmuls (see above)."""
    if paddle.in_dynamic_mode():
        return F.adaptive_avg_pool2d(x, bins)
    shape = paddle.shape(x)
    rows, cols = averaging_matrix(shape[2], bins), averaging_matrix(shape[3], bins)
    return paddle.matmul(paddle.matmul(rows, x), cols, transpose_y=True)


class UperHead(nn.Layer):
    """UperNet decode head (Xiao et al., 2018) as the authors configure it for Swin.

    Pyramid pooling (scales 1, 2, 3, 6) on the last level, 1x1 laterals and 3x3 FPN convs on the
    others, top-down sum, all levels upsampled, concatenated and fused; dropout and a 1x1 classifier.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        self.pool_scales = list(pool_scales)
        self.ppm = nn.LayerList([_conv_bn_relu(in_channels[-1], channels, 1) for _ in pool_scales])
        self.bottleneck = _conv_bn_relu(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.LayerList([_conv_bn_relu(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.LayerList([_conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1]])
        self.fpn_bottleneck = _conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2D(dropout)
        self.conv_seg = nn.Conv2D(channels, num_classes, 1)

    def pyramid_pooling(self, x: paddle.Tensor) -> paddle.Tensor:
        size = x.shape[2:]
        pooled = [resize(conv(adaptive_avg_pool2d(x, scale)), size) for scale, conv in zip(self.pool_scales, self.ppm)]
        return self.bottleneck(paddle.concat([x] + pooled, axis=1))

    def forward(self, features: List[paddle.Tensor]) -> paddle.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        laterals.append(self.pyramid_pooling(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(paddle.concat(outs, axis=1))))


class FCNHead(nn.Layer):
    """Auxiliary head: one 3x3 conv-BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.conv = _conv_bn_relu(in_channels, channels, 3)
        self.dropout = nn.Dropout2D(dropout)
        self.conv_seg = nn.Conv2D(channels, num_classes, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.conv_seg(self.dropout(self.conv(x)))
