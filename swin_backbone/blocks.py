"""Swin Transformer building blocks, channels-last ([B, H, W, C]) throughout.

Padding follows the authors' detection code: zeros on the right/bottom at patch
embedding, before windowing (after norm1) and before patch merging, so that any
input size works and the numbers match theirs.

Two equivalent ways to move tokens: in eager mode, row gathers with cached index maps
(`rows.py`), because Paddle's strided copies behind transpose/roll are slow on CPU; in
static graphs (export), plain pad/roll/reshape/transpose, which export cleanly.
"""
from typing import List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from . import rows
from .errors import SwinInputError
from .norm import LayerNorm

# The authors use -100 rather than -inf so an all-masked row still has a finite softmax.
MASK_VALUE = -100.0

trunc_normal_ = nn.initializer.TruncatedNormal(std=0.02)
zeros_ = nn.initializer.Constant(0.0)
ones_ = nn.initializer.Constant(1.0)


@paddle.jit.not_to_static  # dy2static would turn `x.shape` into tensors and each `if` below into a cond op
def dims(x: paddle.Tensor) -> list:
    """x.shape, with runtime values (tensors) for the sizes a static graph leaves open (-1)."""
    if paddle.in_dynamic_mode():
        return x.shape
    runtime = paddle.shape(x)
    return [size if size >= 0 else runtime[i] for i, size in enumerate(x.shape)]


def window_partition(x: paddle.Tensor, window_size: int) -> paddle.Tensor:
    """[B, H, W, C] -> [B * nW, ws * ws, C]; H and W must be multiples of window_size."""
    batch, height, width, channels = dims(x)
    grid_h, grid_w = height // window_size, width // window_size
    x = x.reshape([-1, grid_h, window_size, grid_w, window_size, channels]).transpose([0, 1, 3, 2, 4, 5])
    # Static graphs: the window count as a runtime value, not -1. Paddle 3's oneDNN inference pass
    # operator_reshape_onednn_fuse_pass folds a transpose followed by a reshape to a constant shape into
    # one fused_transpose whose declared shape stays the transpose's ([-1, -1, -1, 7, 7, C]), so the qkv
    # fc after it flattens that to [1, -784] and predictor creation fails; it leaves alone a reshape
    # whose shape is computed at runtime.
    windows = -1 if paddle.in_dynamic_mode() else batch * grid_h * grid_w
    return x.reshape([windows, window_size * window_size, channels])


def window_reverse(windows: paddle.Tensor, window_size: int, height: int, width: int) -> paddle.Tensor:
    """[B * nW, ws * ws, C] -> [B, H, W, C]; the inverse of window_partition."""
    channels = windows.shape[-1]
    x = windows.reshape([-1, height // window_size, width // window_size, window_size, window_size, channels])
    return x.transpose([0, 1, 3, 2, 4, 5]).reshape([-1, height, width, channels])


def pad_to_multiple(x: paddle.Tensor, multiple: int, data_format: str = "NHWC") -> paddle.Tensor:
    """Zero-pad H and W on the bottom/right up to multiples of `multiple` ([B, H, W, C] or [B, C, H, W]).

    In a static graph the amounts are computed from the runtime shape, so one export serves every size.
    """
    h_axis = 1 if data_format == "NHWC" else 2
    if paddle.in_dynamic_mode():
        pad_h, pad_w = -x.shape[h_axis] % multiple, -x.shape[h_axis + 1] % multiple
        return F.pad(x, [0, pad_w, 0, pad_h], data_format=data_format) if pad_h or pad_w else x
    # Static graph: append zero blocks (Paddle2ONNX mistranslates pad with runtime amounts on NHWC).
    for axis in (h_axis, h_axis + 1):
        shape = paddle.shape(x)
        amount = (multiple - shape[axis] % multiple) % multiple
        # concat of [1]-shaped pieces, not stack: under FLAGS_set_to_1d (set by the plug-ins) shape[i] is 1-D
        sizes = [(amount if i == axis else shape[i]).reshape([1]) for i in range(4)]
        zeros = paddle.zeros(paddle.concat(sizes), x.dtype)
        x = paddle.concat([x, zeros], axis=axis)
    return x


def relative_position_index(window_size: int) -> np.ndarray:
    """[ws*ws, ws*ws] index into the (2ws-1)^2 bias table for every (query, key) pair of a window."""
    rows, cols = np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])  # [2, N]
    delta = coords[:, :, None] - coords[:, None, :] + window_size - 1  # [2, N, N], each in [0, 2ws-2]
    return (delta[0] * (2 * window_size - 1) + delta[1]).astype("int64")


def _region_ids(length, window_size: int, shift_size: int) -> paddle.Tensor:
    """[length] region of each position after the cyclic shift: 0 body, 1 and 2 the wrapped strips."""
    pos = paddle.arange(length)
    return (pos >= length - window_size).astype("int32") + (pos >= length - shift_size).astype("int32")


def shifted_window_mask(height, width, window_size: int, shift_size: int) -> paddle.Tensor:
    """[nW, N, N] additive mask (0 or MASK_VALUE) that stops attention across shifted-in regions.

    Built from tensor ops so that it also works with the symbolic sizes of an exported graph.
    """
    regions = _region_ids(height, window_size, shift_size).unsqueeze(1) * 3 \
        + _region_ids(width, window_size, shift_size).unsqueeze(0)
    regions = window_partition(regions.astype("float32").reshape([1, height, width, 1]), window_size).squeeze(-1)
    different = regions.unsqueeze(2) != regions.unsqueeze(1)
    # A scaled 0/1 map, not paddle.where over 0-D values: a static graph broadcasts those through
    # `0-D + [nW, N, N]` adds, whose 0-D constant Paddle Inference's default oneDNN kernels cannot broadcast
    # ("could not reshape a memory descriptor", Paddle 2.6), and Paddle 3 warns that a PIR value has no place.
    # Same values, bit for bit.
    return different.astype("float32") * MASK_VALUE


class DropPath(nn.Layer):
    """Stochastic depth: drops the whole residual branch per sample; identity in eval."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        # scale the [B, 1, 1, 1] mask, not x: one pass over the activations instead of two
        keep = paddle.floor(keep_prob + paddle.rand(shape, dtype=x.dtype)) / keep_prob
        return x * keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Layer):
    """Linear -> GELU -> Linear, with dropout after each."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.drop(rows.dense(self.drop(self.act(rows.dense(x, self.fc1))), self.fc2))


class PatchEmbed(nn.Layer):
    """[B, C_in, H, W] -> [B, ceil(H/p), ceil(W/p), D]: strided conv (input zero-padded) and optional norm."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, patch_norm: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2D(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = rows.channels_last(self.proj(pad_to_multiple(x, self.patch_size, "NCHW")))
        return self.norm(x) if self.norm is not None else x


class WindowAttention(nn.Layer):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = self.create_parameter(
            [(2 * window_size - 1) ** 2, num_heads], default_initializer=trunc_normal_)
        self.register_buffer(
            "relative_position_index",
            paddle.to_tensor(relative_position_index(window_size).ravel()), persistable=False)
        self.qkv = nn.Linear(dim, dim * 3, bias_attr=None if qkv_bias else False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> paddle.Tensor:
        """[nH, N, N] bias gathered from the table, N = ws * ws."""
        n = self.window_size * self.window_size
        bias = paddle.gather(self.relative_position_bias_table, self.relative_position_index)
        return bias.reshape([n, n, self.num_heads]).transpose([2, 0, 1])

    def split_heads(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B_, N, C] -> [3, B_, nH, N, hd] queries, keys and values."""
        windows, n, channels = x.shape
        head_dim = channels // self.num_heads
        if not rows.use_gathers():
            return self.qkv(x).reshape([-1, n, 3, self.num_heads, head_dim]).transpose([2, 0, 3, 1, 4])
        qkv = rows.dense(x.reshape([-1, channels]), self.qkv)
        order = rows.cached(rows.head_split_index, windows, n, self.num_heads)
        return paddle.gather(qkv.reshape([-1, head_dim]), order).reshape([3, windows, self.num_heads, n, head_dim])

    def merge_heads(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B_, nH, N, hd] -> [B_, N, nH * hd]."""
        windows, heads, n, head_dim = x.shape
        if not rows.use_gathers():
            return x.transpose([0, 2, 1, 3]).reshape([-1, n, heads * head_dim])
        order = rows.cached(rows.head_merge_index, windows, n, heads)
        return paddle.gather(x.reshape([-1, head_dim]), order).reshape([windows, n, heads * head_dim])

    def forward(self, x: paddle.Tensor, mask: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        """[B * nW, N, C] -> [B * nW, N, C]; mask is [nW, N, N] or None."""
        n = x.shape[1]
        heads = self.split_heads(x)
        # Eager: unbind, whose gradient is one stack, not 3 padded copies. Static graphs: three slices, the
        # same values; OpenVINO's Paddle front end has no unbind and converts unstack only at static shapes.
        q, k, v = paddle.unbind(heads) if rows.use_gathers() else (heads[0], heads[1], heads[2])
        attn = paddle.matmul(q * self.scale, k, transpose_y=True)
        # Biases are added with only leading dims to broadcast over (no size-1 axes): Paddle's CPU add then
        # takes its row-wise path, ~8x faster than its general broadcast.
        bias = self.relative_position_bias()
        if mask is None and rows.use_gathers():
            attn = attn + bias
        elif mask is None:
            # Static graphs: a reshape between matmul and add. Paddle Inference's oneDNN passes would fuse
            # `matmul + [nH, N, N]` into one matmul whose lower-rank addend makes it ~100x slower.
            attn = (attn.reshape([-1, 1, self.num_heads, n, n]) + bias).reshape([-1, self.num_heads, n, n])
        else:  # bias and mask summed first: one pass over the attention map instead of two
            num_windows = dims(mask)[0]
            bias = mask.unsqueeze(1).tile([1, self.num_heads, 1, 1]) + bias
            attn = (attn.reshape([-1, num_windows, self.num_heads, n, n]) + bias).reshape([-1, self.num_heads, n, n])
        attn = self.attn_drop(F.softmax(attn, axis=-1))
        return self.proj_drop(rows.dense(self.merge_heads(paddle.matmul(attn, v)), self.proj))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinBlock(nn.Layer):
    """(Shifted) window attention and MLP, each pre-norm with a residual; [B, H, W, C] in and out."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise SwinInputError(f"shift_size must be in [0, window_size), got {shift_size} for window {window_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def window_attention(self, x: paddle.Tensor, attn_mask: Optional[paddle.Tensor]) -> paddle.Tensor:
        """[B, H, W, C] normed tokens -> attention output at the same positions (pad, shift, windows, undo)."""
        batch, height, width, channels = x.shape
        mask = attn_mask if self.shift_size else None
        if not rows.use_gathers():
            return self._window_attention_portable(x, mask)
        args = (batch, height, width, self.window_size, self.shift_size)
        padded = height % self.window_size != 0 or width % self.window_size != 0
        windows = rows.gather(x.reshape([-1, channels]), rows.cached(rows.window_gather_index, *args), padded)
        windows = self.attn(windows.reshape([-1, self.window_size ** 2, channels]), mask)
        out = paddle.gather(windows.reshape([-1, channels]), rows.cached(rows.window_scatter_index, *args))
        return out.reshape([batch, height, width, channels])

    def _window_attention_portable(self, x: paddle.Tensor, mask: Optional[paddle.Tensor]) -> paddle.Tensor:
        """window_attention with pad/roll/reshape/transpose: for static graphs (export)."""
        height, width = dims(x)[1:3]
        y = pad_to_multiple(x, self.window_size)
        padded_h, padded_w = dims(y)[1:3]
        if self.shift_size:
            y = paddle.roll(y, shifts=(-self.shift_size, -self.shift_size), axis=(1, 2))
        y = self.attn(window_partition(y, self.window_size), mask)
        y = window_reverse(y, self.window_size, padded_h, padded_w)
        if self.shift_size:
            y = paddle.roll(y, shifts=(self.shift_size, self.shift_size), axis=(1, 2))
        return y[:, :height, :width, :]

    def forward(self, x: paddle.Tensor, attn_mask: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        """[B, H, W, C] -> [B, H, W, C]; attn_mask: [nW, N, N] for the padded size, used when the block shifts."""
        x = x + self.drop_path(self.window_attention(self.norm1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Layer):
    """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]: concatenate each 2x2 neighbourhood, norm, project.

    The neighbourhood is concatenated in the order (row, col) = (0,0), (1,0), (0,1), (1,1), as the
    released weights expect.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        batch, height, width, channels = dims(x)
        if rows.use_gathers():
            order = rows.cached(rows.merge_index, batch, height, width)
            x = rows.gather(x.reshape([-1, channels]), order, height % 2 != 0 or width % 2 != 0)
            x = x.reshape([batch, (height + 1) // 2, (width + 1) // 2, 4 * channels])
        else:  # reshape/transpose rather than strided slices, which Paddle2ONNX mis-sizes on odd inputs
            x = pad_to_multiple(x, 2)
            half_h, half_w = (height + 1) // 2, (width + 1) // 2
            x = x.reshape([-1, half_h, 2, half_w, 2, channels]).transpose([0, 1, 3, 4, 2, 5])
            x = x.reshape([-1, half_h, half_w, 4 * channels])
        return self.reduction(self.norm(x))


class SwinStage(nn.Layer):
    """`depth` Swin blocks alternating regular and shifted windows, then an optional PatchMerging.

    forward returns the blocks' output; the caller applies `downsample` to feed the next stage.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: Sequence[float] = (),
                 downsample: bool = False, use_checkpoint: bool = False):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.use_checkpoint = use_checkpoint
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.LayerList([
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else shift_size, mlp_ratio,
                      qkv_bias, qk_scale, drop, attn_drop, drop_path[i])
            for i in range(depth)])
        self.downsample = PatchMerging(dim) if downsample else None

    def attention_mask(self, height: int, width: int) -> Optional[paddle.Tensor]:
        """[nW, N, N] mask for an H x W stage input (padded to whole windows), or None without shift."""
        if not self.shift_size or len(self.blocks) < 2:
            return None
        ws = self.window_size
        padded_h, padded_w = (height + ws - 1) // ws * ws, (width + ws - 1) // ws * ws
        if rows.use_gathers():
            return rows.cached(shifted_window_mask, padded_h, padded_w, ws, self.shift_size)
        return shifted_window_mask(padded_h, padded_w, ws, self.shift_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B, H, W, C] -> [B, H, W, C]."""
        mask = self.attention_mask(*dims(x)[1:3])
        for block in self.blocks:
            if self.use_checkpoint and self.training and not x.stop_gradient:
                x = recompute(block, x, mask)
            else:
                x = block(x, mask)
        return x


def recompute(layer: nn.Layer, *args: paddle.Tensor) -> paddle.Tensor:
    """Run `layer` without keeping activations; they are recomputed in the backward pass."""
    from paddle.distributed.fleet.utils import recompute as paddle_recompute

    return paddle_recompute(layer, *args)


def stage_dims(embed_dim: int, num_stages: int) -> List[int]:
    """Channels of each stage: the width doubles at every patch merging."""
    return [embed_dim * 2 ** i for i in range(num_stages)]
