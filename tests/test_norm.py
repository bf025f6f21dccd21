"""LayerNorm's CPU backward against float64 arithmetic, and against Paddle's own where Paddle is right."""
import numpy as np
import paddle
import pytest

from swin_backbone.norm import LayerNorm, layer_norm_backward

EPS = 1e-5


def reference(x: np.ndarray, weight: np.ndarray, grad: np.ndarray):
    """(y, dx, dweight, dbias) of LayerNorm over the last axis in float64."""
    x, weight, grad = (a.astype("float64") for a in (x, weight, grad))
    centred = x - x.mean(-1, keepdims=True)
    inv_std = 1.0 / np.sqrt((centred ** 2).mean(-1, keepdims=True) + EPS)
    normed = centred * inv_std
    grad_normed = grad * weight
    dx = inv_std * (grad_normed - grad_normed.mean(-1, keepdims=True)
                    - normed * (grad_normed * normed).mean(-1, keepdims=True))
    axes = tuple(range(x.ndim - 1))
    return normed * weight, dx, (grad * normed).sum(axes), grad.sum(axes)


def sample(shape, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    return (rng.normal(size=shape) * 2 + 1).astype("float32"), (rng.random(channels) + 0.5).astype("float32"), \
        rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("rows,channels", [(3, 16), (70, 16), (6272, 96), (392, 768)])
def test_backward_matches_float64(rows, channels):
    x, weight, grad = sample((rows, channels))
    got = layer_norm_backward(paddle.to_tensor(x), paddle.to_tensor(weight), paddle.to_tensor(grad), EPS)
    for mine, expected in zip(got, reference(x, weight, grad)[1:]):
        scale = max(1.0, np.abs(expected).max())
        assert np.abs(mine.numpy() - expected).max() / scale < 2e-5


@pytest.mark.parametrize("frozen", [False, True])
def test_layer_equals_float64_trainable_or_frozen(frozen):
    """Frozen: Paddle 2.6.2's own CPU kernel returns a wrong input gradient when weight and bias need none
    (off by ~1 here); ours is right in both cases."""
    x, weight, grad = sample((2, 5, 7, 16), seed=1)
    layer = LayerNorm(16)
    layer.weight.set_value(weight)
    for param in (layer.weight, layer.bias):
        param.stop_gradient = frozen
    inputs = paddle.to_tensor(x, stop_gradient=False)
    out = layer(inputs)
    (out * paddle.to_tensor(grad)).sum().backward()
    y, dx, dweight, dbias = reference(x, weight, grad)
    assert np.abs(out.numpy() - y).max() < 1e-5
    assert np.abs(inputs.grad.numpy() - dx).max() < 1e-5
    if frozen:
        assert layer.weight.grad is None and layer.bias.grad is None
    else:
        assert np.abs(layer.weight.grad.numpy() - dweight).max() < 1e-4
        assert np.abs(layer.bias.grad.numpy() - dbias).max() < 1e-4


def test_same_as_paddle_layer_norm_when_paddle_is_right():
    x, weight, grad = sample((4, 9, 48), seed=2)
    ours, theirs = LayerNorm(48), paddle.nn.LayerNorm(48)
    results = []
    for layer in (ours, theirs):
        layer.weight.set_value(weight)
        inputs = paddle.to_tensor(x, stop_gradient=False)
        out = layer(inputs)
        (out * paddle.to_tensor(grad)).sum().backward()
        results.append([out.numpy(), inputs.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()])
    for mine, paddles in zip(*results):
        assert np.abs(mine - paddles).max() < 2e-5
    with paddle.no_grad():  # inference takes Paddle's layer as is
        assert np.array_equal(ours(paddle.to_tensor(x)).numpy(), theirs(paddle.to_tensor(x)).numpy())
