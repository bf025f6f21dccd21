"""BatchNorm synchronised across processes on CPU, where Paddle 2.6.2 has no `sync_batch_norm` kernel.

PaddleSeg's layers ask for SyncBatchNorm and fall back to a plain BatchNorm2D on CPU (its `SyncBatchNorm`
helper); PaddleDetection converts only on GPU (`norm_type: sync_bn`). Left so, every process normalises with
the statistics of its own few images and keeps its own running statistics. `convert` turns those layers
into `CPUSyncBatchNorm`: in training, the batch mean and variance are taken over the images of every process
(two all-reduces, differentiable, so the gradients are those of BatchNorm over the whole global batch), and
the running statistics are the same on every process. In evaluation, or on one process, it is BatchNorm2D.
"""
from typing import Tuple

import paddle
import paddle.distributed as dist
import paddle.nn as nn
from paddle.autograd import PyLayer


class AllReduceSum(PyLayer):
    """Sum over processes; its gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, x: paddle.Tensor) -> paddle.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: paddle.Tensor) -> paddle.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def global_moments(x: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """Mean and (biased) variance per channel of x [N, C, H, W] over the images of every process: [C], [C]."""
    count = AllReduceSum.apply(paddle.full([1], x.shape[0] * x.shape[2] * x.shape[3], x.dtype))
    mean = AllReduceSum.apply(x.sum(axis=[0, 2, 3])) / count
    centred = x - mean.reshape([1, -1, 1, 1])
    variance = AllReduceSum.apply((centred * centred).sum(axis=[0, 2, 3])) / count
    return mean, variance


class CPUSyncBatchNorm(nn.BatchNorm2D):
    """BatchNorm2D whose training statistics span every process (NCHW)."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.training or dist.get_world_size() < 2:
            return super().forward(x)
        mean, variance = global_moments(x)
        with paddle.no_grad():  # Paddle's convention: running = momentum * running + (1 - momentum) * batch
            self._mean.set_value(self._momentum * self._mean + (1 - self._momentum) * mean)
            self._variance.set_value(self._momentum * self._variance + (1 - self._momentum) * variance)
        scale = paddle.rsqrt(variance + self._epsilon)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.bias is not None else 0.0)
        return x * scale.reshape([1, -1, 1, 1]) + shift.reshape([1, -1, 1, 1])


def convert(model: nn.Layer) -> int:
    """Make every BatchNorm2D (NCHW) of `model` a CPUSyncBatchNorm in place; returns how many.

    The class of each layer is swapped rather than the layer rebuilt, so parameter names, running statistics,
    the optimizer's references and checkpoints stay exactly as they were.
    """
    converted = 0
    for layer in model.sublayers(include_self=True):
        if type(layer) is nn.BatchNorm2D and layer._data_format == "NCHW":
            layer.__class__ = CPUSyncBatchNorm
            converted += 1
    return converted
