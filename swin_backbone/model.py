"""The Swin Transformer: a multi-scale backbone (detection/segmentation) and a classifier sharing one trunk."""
from typing import List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .blocks import dims, PatchEmbed, SwinStage, stage_dims, trunc_normal_, zeros_, ones_
from .errors import SwinInputError
from .norm import LayerNorm
from .rows import channels_first


# Substrings of parameter names the authors exclude from weight decay (besides norms and biases, which are 1-D).
NO_WEIGHT_DECAY_KEYWORDS = ("absolute_pos_embed", "relative_position_bias_table")


def _pair(value) -> Tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


class SwinTrunk(nn.Layer):
    """Patch embedding, optional absolute position embedding and the stages, shared by both models.

    Parameter names follow the authors' code, so released checkpoints map one to one.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, depths: Sequence[int],
                 num_heads: Sequence[int], window_sizes: Sequence[int], shift_sizes: Sequence[int],
                 mlp_ratio: float, qkv_bias: bool, qk_scale: Optional[float], drop_rate: float,
                 attn_drop_rate: float, drop_path_rate: float, ape_grid: Optional[Tuple[int, int]],
                 patch_norm: bool, use_checkpoint: bool):
        super().__init__()
        if len(depths) != len(num_heads):
            raise SwinInputError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.patch_size = patch_size
        self.mlp_ratio = mlp_ratio
        self.num_layers = len(depths)
        self.num_features = stage_dims(embed_dim, self.num_layers)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.ape = ape_grid is not None
        if self.ape:
            # Stored as a [1, D, Gh, Gw] grid (the detection layout) so it can be resized to any input.
            self.absolute_pos_embed = self.create_parameter(
                [1, embed_dim, *ape_grid], default_initializer=trunc_normal_)
        self.pos_drop = nn.Dropout(drop_rate)
        total_depth = sum(depths)
        rates = [drop_path_rate * i / max(total_depth - 1, 1) for i in range(total_depth)]
        self.layers = nn.LayerList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            self.layers.append(SwinStage(
                self.num_features[i], depth, num_heads[i], window_sizes[i], shift_sizes[i], mlp_ratio,
                qkv_bias, qk_scale, drop_rate, attn_drop_rate, rates[first:first + depth],
                downsample=i < self.num_layers - 1, use_checkpoint=use_checkpoint))
        self.apply(_init_weights)

    def no_weight_decay_keywords(self) -> List[str]:
        """Substrings of parameter names the authors exclude from weight decay (norms are 1-D)."""
        return list(NO_WEIGHT_DECAY_KEYWORDS)

    def check_input(self, x: paddle.Tensor) -> None:
        """Raise SwinInputError unless x is [B, C_in, H, W] (sizes a static graph leaves open are not checked)."""
        channels = self.patch_embed.proj.weight.shape[1]
        if x.ndim != 4 or x.shape[1] not in (channels, -1):
            raise SwinInputError(f"{type(self).__name__} expects images [B, {channels}, H, W], got a tensor of "
                                 f"shape {list(x.shape)}")

    def embed(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B, C_in, H, W] -> [B, ceil(H/p), ceil(W/p), D] tokens, position embedding added."""
        self.check_input(x)
        x = self.patch_embed(x)
        if self.ape:
            pos = self.absolute_pos_embed
            # bicubic at the same size is the identity, so static graphs interpolate unconditionally
            if not paddle.in_dynamic_mode() or tuple(pos.shape[2:]) != tuple(x.shape[1:3]):
                pos = F.interpolate(pos, size=dims(x)[1:3], mode="bicubic", align_corners=False)
            x = x + pos.transpose([0, 2, 3, 1])
        return self.pos_drop(x)

    def forward_stages(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        """[B, C_in, H, W] -> each stage's output [B, H_i, W_i, C_i] (channels-last, before any out norm)."""
        x = self.embed(x)
        outs = []
        for stage in self.layers:
            x = stage(x)
            outs.append(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return outs

    def flops(self, height: int, width: int) -> int:
        """Multiply-accumulates of the trunk at an H x W input, counted as the authors do (matmuls only)."""
        ph, pw = -(-height // self.patch_size), -(-width // self.patch_size)
        total = ph * pw * self.embed_dim * self.patch_embed.proj.weight.shape[1] * self.patch_size ** 2
        total += ph * pw * self.embed_dim  # patch norm
        for i, stage in enumerate(self.layers):
            dim, ws = self.num_features[i], stage.window_size
            padded = -(-ph // ws) * ws * -(-pw // ws) * ws
            tokens = ph * pw
            per_block = (
                tokens * dim  # norm1
                + padded * dim * 3 * dim  # qkv
                + 2 * padded * ws * ws * dim  # q @ k^T and attn @ v
                + padded * dim * dim  # proj
                + tokens * dim  # norm2
                + 2 * tokens * dim * int(dim * self.mlp_ratio))  # mlp
            total += per_block * self.depths[i]
            if stage.downsample is not None:
                total += tokens * dim  # merging norm
                ph, pw = -(-ph // 2), -(-pw // 2)
                total += ph * pw * 4 * dim * 2 * dim
        return total


def _init_weights(layer: nn.Layer) -> None:
    if isinstance(layer, nn.Linear):
        trunc_normal_(layer.weight)
        if layer.bias is not None:
            zeros_(layer.bias)
    elif isinstance(layer, nn.LayerNorm):
        ones_(layer.weight)
        zeros_(layer.bias)


class SwinTransformer(SwinTrunk):
    """Multi-scale Swin backbone with the authors' detection-code arguments.

    forward: [B, C_in, H, W] (any H, W) -> list of [B, C_i, ceil(H/4/2^i), ceil(W/4/2^i)] for i in out_indices,
    each after its own LayerNorm.
    """

    def __init__(self, pretrain_img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2, ape: bool = False,
                 patch_norm: bool = True, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, use_checkpoint: bool = False):
        num_stages = len(depths)
        pretrain_h, pretrain_w = _pair(pretrain_img_size)
        ape_grid = (pretrain_h // patch_size, pretrain_w // patch_size) if ape else None
        super().__init__(patch_size, in_chans, embed_dim, depths, num_heads, [window_size] * num_stages,
                         [window_size // 2] * num_stages, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                         attn_drop_rate, drop_path_rate, ape_grid, patch_norm, use_checkpoint)
        self.out_indices = tuple(out_indices)
        bad = [i for i in self.out_indices if not 0 <= i < num_stages]
        if bad:
            raise SwinInputError(f"out_indices {bad} out of range for {num_stages} stages")
        if not -1 <= frozen_stages <= num_stages:
            raise SwinInputError(f"frozen_stages must be in [-1, {num_stages}], got {frozen_stages}")
        self.frozen_stages = frozen_stages
        self.out_channels = [self.num_features[i] for i in self.out_indices]
        self.out_strides = [patch_size * 2 ** i for i in self.out_indices]
        for i in self.out_indices:
            self.add_sublayer(f"norm{i}", LayerNorm(self.num_features[i]))
        self._freeze_stages()

    def _frozen_layers(self) -> List[nn.Layer]:
        """The parts frozen_stages covers, in the authors' order: patch embedding (+ ape), then whole stages."""
        if self.frozen_stages < 0:
            return []
        frozen: List[nn.Layer] = [self.patch_embed]
        if self.frozen_stages >= 2:
            frozen.append(self.pos_drop)
            frozen += list(self.layers[:self.frozen_stages - 1])
        return frozen

    def _freeze_stages(self) -> None:
        for layer in self._frozen_layers():
            layer.eval()
            for param in layer.parameters():
                param.stop_gradient = True
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.stop_gradient = True

    def train(self):
        """Training mode everywhere except the frozen stages, which stay in eval mode."""
        super().train()
        self._freeze_stages()
        return self

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        """[B, C_in, H, W] -> list of normed NCHW stage features for out_indices."""
        stages = self.forward_stages(x)
        return [channels_first(getattr(self, f"norm{i}")(stages[i])) for i in self.out_indices]


class SwinClassifier(SwinTrunk):
    """Swin image classifier with the authors' classification-code arguments.

    As in their code, a stage whose resolution at img_size is not larger than window_size uses a window of
    that resolution and no shift.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, ape: bool = False,
                 patch_norm: bool = True, use_checkpoint: bool = False):
        img_h, img_w = _pair(img_size)
        grid = (img_h // patch_size, img_w // patch_size)
        window_sizes, shift_sizes = [], []
        for i in range(len(depths)):
            resolution = min(grid[0] // 2 ** i, grid[1] // 2 ** i)
            if resolution <= window_size:
                window_sizes.append(resolution)
                shift_sizes.append(0)
            else:
                window_sizes.append(window_size)
                shift_sizes.append(window_size // 2)
        super().__init__(patch_size, in_chans, embed_dim, depths, num_heads, window_sizes, shift_sizes,
                         mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate,
                         grid if ape else None, patch_norm, use_checkpoint)
        self.img_size = (img_h, img_w)
        self.num_classes = num_classes
        self.norm = LayerNorm(self.num_features[-1])
        self.head = nn.Linear(self.num_features[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(_init_weights)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B, C_in, H, W] -> [B, D_last] pooled, normed features."""
        return self.norm(self.forward_stages(x)[-1]).mean(axis=[1, 2])

    def forward_head(self, features: paddle.Tensor) -> paddle.Tensor:
        """[B, D_last] -> [B, num_classes] logits."""
        return self.head(features)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B, C_in, H, W] -> [B, num_classes] logits."""
        return self.forward_head(self.forward_features(x))
