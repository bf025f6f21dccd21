"""LayerNorm with a faster CPU backward for eager training.

Paddle 2.6's CPU layer_norm backward takes ~40x its forward (8 ms for a [6272, 96] input, ~18% of a
Swin-T training step). Its work is row reductions and broadcasts, which Paddle's eager CPU kernels run
single-threaded and slowly; written as small matmuls (a row mean is `x @ 1/C`, spreading a [T, 1]
column over C channels is an outer product with ones) and same-shape elementwise ops, the same backward
takes 1.6 ms. The forward is Paddle's own kernel; GPU, static graphs and inference use Paddle's layer
entirely.
"""
from typing import Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer


def layer_norm_backward(x: paddle.Tensor, weight: paddle.Tensor, grad: paddle.Tensor,
                        epsilon: float) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Gradients (x [T, C], weight [C], bias [C]) of LayerNorm over C, given x [T, C] and dL/dy [T, C]."""
    rows, channels = x.shape
    mean_col = paddle.full([channels, 1], 1.0 / channels, x.dtype)  # x @ mean_col: the row means, [T, 1]
    ones_row = paddle.ones([1, channels], x.dtype)  # col @ ones_row: a [T, 1] column over every channel
    ones_col = paddle.ones([1, rows], x.dtype)  # ones_col @ m: the column sums of m, [1, C]

    def spread(column: paddle.Tensor) -> paddle.Tensor:
        return paddle.matmul(column, ones_row)

    # mean and 1/std recomputed here: Paddle's forward kernel does not hand them out
    centred = x - spread(paddle.matmul(x, mean_col))
    inv_std = paddle.rsqrt(paddle.matmul(centred * centred, mean_col) + epsilon)  # [T, 1]
    normed = centred * spread(inv_std)
    grad_weight = paddle.matmul(ones_col, grad * normed).reshape([channels])
    grad_bias = paddle.matmul(ones_col, grad).reshape([channels])
    grad_normed = grad * paddle.matmul(paddle.ones([rows, 1], x.dtype), weight.reshape([1, channels]))
    mean_grad = paddle.matmul(grad_normed, mean_col)
    mean_grad_normed = paddle.matmul(grad_normed * normed, mean_col)
    grad_x = (grad_normed - spread(mean_grad) - normed * spread(mean_grad_normed)) * spread(inv_std)
    return grad_x, grad_weight, grad_bias


class _LayerNormFunction(PyLayer):
    @staticmethod
    def forward(ctx, x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, epsilon: float) -> paddle.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.epsilon = epsilon
        ctx.needs = (not x.stop_gradient, not weight.stop_gradient, not bias.stop_gradient)
        return F.layer_norm(x, x.shape[-1:], weight, bias, epsilon)

    @staticmethod
    def backward(ctx, grad: paddle.Tensor):
        x, weight = ctx.saved_tensor()
        channels = x.shape[-1]
        grads = layer_norm_backward(x.reshape([-1, channels]), weight, grad.reshape([-1, channels]), ctx.epsilon)
        grad_x = grads[0].reshape(x.shape)
        return tuple(g if needed else None for g, needed in zip((grad_x, *grads[1:]), ctx.needs))


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last dim, with the faster backward above for eager float32 training on CPU."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        needs_grad = not (x.stop_gradient and self.weight.stop_gradient and self.bias.stop_gradient)
        if (needs_grad and paddle.in_dynamic_mode() and paddle.is_grad_enabled() and x.place.is_cpu_place()
                and x.dtype == paddle.float32):
            return _LayerNormFunction.apply(x, self.weight, self.bias, self._epsilon)
        return nn.LayerNorm.forward(self, x)  # not super(): dy2static cannot translate it
