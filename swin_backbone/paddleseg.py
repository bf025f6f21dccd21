"""PaddleSeg registration: `import swin_backbone.paddleseg` makes these usable in PaddleSeg configs:

- backbone `SwinBackbone` (BACKBONES): our SwinTransformer with `feat_channels` and `pretrained`;
- model `SwinUperNet` (MODELS): the authors' UperNet decode head and FCN auxiliary head (`upernet.py`);
- transforms `RescaleToFit` and `RandomRescaleToFit` (TRANSFORMS): the authors' keep-ratio resize into
  a (long, short) box, e.g. (2048, 512), with an optional random ratio.

It also makes paddleseg 2.8 work on Paddle 2.6: FLAGS_set_to_1d (its training loop indexes 0-D losses)
and a `metrics.calculate_area` that does not concatenate 0-D tensors; and its evaluation also reports the
mIoU over the classes present in the labels (`evaluate`).
"""
import importlib
import inspect
from typing import List, Optional, Sequence

import cv2
import numpy as np
import paddle
import paddle.nn as nn
import paddleseg.core as paddleseg_core
from paddleseg.cvlibs import manager
from paddleseg.utils import logger, metrics, utils

from ._load_order import require_working_zlib
from .convert import check_fill, load_pretrained
from .errors import SwinInputError
from .model import SwinTransformer
from .upernet import FCNHead, UperHead, resize as _resize

require_working_zlib()  # PaddleSeg reads ADE20K labels (PNG) with Pillow: see _load_order.py
# paddleseg 2.8's training loop indexes loss.numpy()[0]: Paddle 2.6 makes that 0-D unless told otherwise.
paddle.set_flags({"FLAGS_set_to_1d": True})

__all__ = ["SwinBackbone", "SwinUperNet", "RescaleToFit", "RandomRescaleToFit", "evaluate"]


def _register(registry, component):
    """Add to a PaddleSeg manager unless a component of that name is there (importing twice is harmless)."""
    if component.__name__ not in registry.components_dict:
        registry.add_component(component)
    return component


class SwinBackbone(SwinTransformer):
    """Our SwinTransformer for PaddleSeg (same arguments): `feat_channels` lists the channels of the returned
    features, `pretrained` names an authors' `.pth` or a `.pdparams`, and `in_channels` is PaddleSeg's name
    for `in_chans` (its builder fills it in from the dataset).
    """

    def __init__(self, pretrained: Optional[str] = None, in_channels: Optional[int] = None, **kwargs):
        if in_channels is not None:
            kwargs["in_chans"] = in_channels
        super().__init__(**kwargs)
        self.feat_channels = list(self.out_channels)
        if pretrained:
            load_pretrained(self, pretrained)


class SwinUperNet(nn.Layer):
    """Swin + UperNet with an FCN auxiliary head on `aux_index` (the authors' semantic segmentation model).

    Returns [logits, aux_logits] at input size when training, [logits] in eval (PaddleSeg's convention).
    """

    def __init__(self, num_classes: int, backbone: nn.Layer, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1, aux_channels: int = 256,
                 aux_index: int = 2, align_corners: bool = False, pretrained: Optional[str] = None):
        super().__init__()
        if align_corners:
            raise SwinInputError("the authors' UperNet upsamples with align_corners=False")
        self.backbone = backbone
        self.align_corners = align_corners
        self.decode_head = UperHead(backbone.feat_channels, num_classes, channels, pool_scales, dropout)
        self.aux_index = aux_index
        self.auxiliary_head = FCNHead(backbone.feat_channels[aux_index], num_classes, aux_channels, dropout)
        if pretrained:  # checked by our safe reader first: PaddleSeg's loader unpickles without limits
            check_fill(self, pretrained, "pretrained")
            utils.load_entire_model(self, pretrained)

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        size = x.shape[2:]
        features = self.backbone(x)
        logits = [_resize(self.decode_head(features), size)]
        if self.training:
            logits.append(_resize(self.auxiliary_head(features[self.aux_index]), size))
        return logits


def _rescale_to_fit(data: dict, long_side: float, short_side: float) -> dict:
    """Keep-ratio resize so the image fits in a (long_side, short_side) box (one side touching it)."""
    height, width = data["img"].shape[:2]
    factor = min(long_side / max(height, width), short_side / min(height, width))
    size = (int(width * factor + 0.5), int(height * factor + 0.5))
    data["trans_info"].append(("resize", data["img"].shape[0:2]))
    data["img"] = cv2.resize(data["img"], size, interpolation=cv2.INTER_LINEAR)
    for key in data.get("gt_fields", []):
        data[key] = cv2.resize(data[key], size, interpolation=cv2.INTER_NEAREST)
    return data


class RescaleToFit:
    """Resize keeping the aspect ratio into a box `scale` = (long, short), like the authors' test resize."""

    def __init__(self, scale: Sequence[int] = (2048, 512)):
        self.long_side, self.short_side = max(scale), min(scale)

    def __call__(self, data: dict) -> dict:
        return _rescale_to_fit(data, self.long_side, self.short_side)


class RandomRescaleToFit:
    """RescaleToFit with the box scaled by a ratio drawn uniformly from `ratio_range` (training)."""

    def __init__(self, scale: Sequence[int] = (2048, 512), ratio_range: Sequence[float] = (0.5, 2.0)):
        self.long_side, self.short_side = max(scale), min(scale)
        self.ratio_range = tuple(ratio_range)

    def __call__(self, data: dict) -> dict:
        ratio = np.random.uniform(*self.ratio_range)
        return _rescale_to_fit(data, self.long_side * ratio, self.short_side * ratio)


def calculate_area(pred: paddle.Tensor, label: paddle.Tensor, num_classes: int, ignore_index: int = 255):
    """(intersect, pred, label) pixel counts per class, each [num_classes], like paddleseg's calculate_area.

    paddleseg 2.8 concatenates per-class 0-D sums, which Paddle 2.6 rejects; this counts with bincount, over
    values with one of each class appended (then taken away): paddle.bincount ignores `minlength` on an empty
    input, which an image without a correct (or any valid) pixel gives.
    """
    pred, label = pred.squeeze(1) if pred.ndim == 4 else pred, label.squeeze(1) if label.ndim == 4 else label
    if pred.shape != label.shape:
        raise ValueError(f"Shape of `pred` and `label` should be equal, but there are {pred.shape} and {label.shape}.")
    pred, label = pred.reshape([-1]).astype("int64"), label.reshape([-1]).astype("int64")
    valid = label != ignore_index
    pred, label = paddle.masked_select(pred, valid), paddle.masked_select(label, valid)
    every_class = paddle.arange(num_classes, dtype="int64")

    def count(values: paddle.Tensor) -> paddle.Tensor:
        values = paddle.masked_select(values, (values >= 0) & (values < num_classes))
        return paddle.bincount(paddle.concat([values, every_class]))[:num_classes] - 1

    return count(paddle.masked_select(label, pred == label)), count(pred), count(label)


# unwrap: importing this module again (importlib.reload) must not wrap our own wrappers
_paddleseg_mean_iou = inspect.unwrap(metrics.mean_iou)
_paddleseg_evaluate = inspect.unwrap(paddleseg_core.evaluate)
_last_areas: dict = {}


def mean_iou(intersect_area: paddle.Tensor, pred_area: paddle.Tensor, label_area: paddle.Tensor):
    """PaddleSeg's mean_iou (the mean over all classes, an absent one counting as IoU 0); it also keeps the
    areas, so that `evaluate` can report the mean over the classes present in the labels."""
    _last_areas.update(intersect=intersect_area.numpy(), pred=pred_area.numpy(), label=label_area.numpy())
    return _paddleseg_mean_iou(intersect_area, pred_area, label_area)


def present_classes_miou(areas: dict) -> tuple:
    """(mean IoU over the classes present in the labels, their number) from summed pixel counts."""
    present = areas["label"] > 0
    union = areas["pred"] + areas["label"] - areas["intersect"]
    iou = areas["intersect"][present] / np.maximum(union[present], 1)
    return (float(iou.mean()) if present.any() else 0.0), int(present.sum())


def evaluate(model: nn.Layer, eval_dataset, *args, **kwargs):
    """paddleseg.core.evaluate, plus a line with the mIoU over the classes present in the labels.

    PaddleSeg averages over all `num_classes` classes, so a set that holds only a few of ADE20K's 150 scores a
    tiny mIoU however good the model; this says which average is which.
    """
    _last_areas.clear()
    result = _paddleseg_evaluate(model, eval_dataset, *args, **kwargs)
    if _last_areas and kwargs.get("print_detail", True):
        miou, present = present_classes_miou(_last_areas)
        total = len(_last_areas["label"])
        logger.info(f"[EVAL] mIoU over the {present} of {total} classes present in the labels: {miou:.4f} "
                    f"(the mIoU above averages all {total}, an absent class counting as 0)")
    return result


mean_iou.__wrapped__ = _paddleseg_mean_iou
evaluate.__wrapped__ = _paddleseg_evaluate
metrics.calculate_area = calculate_area
metrics.mean_iou = mean_iou
# the evaluation during training: the module paddleseg.core.train imported evaluate by name (the package
# attribute paddleseg.core.train is the function, hence import_module)
importlib.import_module("paddleseg.core.train").evaluate = evaluate
SwinBackbone = _register(manager.BACKBONES, SwinBackbone)
SwinUperNet = _register(manager.MODELS, SwinUperNet)
RescaleToFit = _register(manager.TRANSFORMS, RescaleToFit)
RandomRescaleToFit = _register(manager.TRANSFORMS, RandomRescaleToFit)
