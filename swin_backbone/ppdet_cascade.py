"""Cascade Mask R-CNN heads as the Swin authors trained theirs (mmdetection 2.x), for PaddleDetection's CascadeRCNN.

PaddleDetection's own CascadeHead computes something else (README, Cascade Mask R-CNN): it does not
re-sample after the first stage, decodes GIoU boxes with fixed weights, refines with the predicted label for every
RoI, trains one mask head on first-stage RoIs and averages the stages' softmaxes. These two heads are the authors':

- `CascadeConvFCHead`: per stage 4 shared 3x3 convs (no bias, BatchNorm, ReLU) + 1 FC (ReLU), class-specific
  regression with that stage's delta stds; in training every stage assigns (max IoU, positive at the stage's
  threshold) and samples its RoIs (512, 25 % positive, ground truth prepended), is trained with cross entropy + GIoU
  (weight 10, boxes decoded with that stage's stds) times its stage weight, and refines its RoIs for the next stage
  with the ground-truth label of positives (the ground-truth RoIs themselves dropped); at test time the class
  probabilities are the softmax of the mean of the stages' logits.
- `CascadeFCNMaskHead`: one FCN mask head per stage, trained on that stage's positive samples with its stage weight;
  at test time the stages' sigmoid masks are averaged.

Both keep PaddleDetection's interfaces, so its CascadeRCNN architecture, BBoxPostProcess / MaskPostProcess, exporter
and deploy client run them unchanged. Registered by `swin_backbone.ppdet`.
"""
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.nn.initializer import Constant, KaimingNormal, Normal, XavierUniform

from ppdet.modeling.heads.roi_extractor import RoIAlign
from ppdet.modeling.shape_spec import ShapeSpec

from .errors import SwinInputError

__all__ = ["CascadeConvFCHead", "CascadeFCNMaskHead", "decode_deltas", "box_iou", "giou_loss_sum", "sample_rois",
           "polygon_mask_targets"]

# mmdetection clamps the decoded log-size ratios to +-log(1000 / 16) (wh_ratio_clip = 16 / 1000).
MAX_LOG_RATIO = math.log(1000.0 / 16)
FLOAT32_EPS = 1.1920928955078125e-07
STAGE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
STAGE_IOU = (0.5, 0.6, 0.7)
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)


# ---------------------------------------------------------------------------------------------- box arithmetic
def decode_deltas(rois: paddle.Tensor, deltas: paddle.Tensor, stds: Sequence[float],
                  bounds: Optional[paddle.Tensor] = None) -> paddle.Tensor:
    """[N, 4] boxes from [N, 4] rois and [N, 4] normalised deltas (mmdet's DeltaXYWHBBoxCoder, means 0).

    `bounds` [N, 2] (height, width per box) clips the boxes to their image, as mmdet's `max_shape`.
    """
    scaled = deltas * paddle.to_tensor(list(stds), dtype=deltas.dtype)
    centre = (rois[:, :2] + rois[:, 2:]) * 0.5
    size = rois[:, 2:] - rois[:, :2]
    centre = centre + size * scaled[:, :2]
    size = size * paddle.exp(paddle.clip(scaled[:, 2:], -MAX_LOG_RATIO, MAX_LOG_RATIO))
    boxes = paddle.concat([centre - size * 0.5, centre + size * 0.5], axis=1)
    if bounds is None:
        return boxes
    limit = paddle.concat([bounds[:, 1:2], bounds[:, 0:1]], axis=1).tile([1, 2])  # w, h, w, h
    return paddle.minimum(paddle.maximum(boxes, paddle.zeros_like(boxes)), limit)


def scale_deltas(deltas: paddle.Tensor, stds: Sequence[float]) -> paddle.Tensor:
    """[N, 4C] normalised deltas -> the same multiplied by `stds`, log-size ratios clamped as mmdet decodes.

    What the head hands to PaddleDetection's RCNNBox, configured with prior_box_var [1, 1, 1, 1]: its decode then
    computes mmdet's boxes (it clamps only the upper end itself).
    """
    num_classes = deltas.shape[1] // 4
    scaled = deltas.reshape([-1, num_classes, 4]) * paddle.to_tensor(list(stds), dtype=deltas.dtype)
    scaled = paddle.concat([scaled[:, :, :2], paddle.clip(scaled[:, :, 2:], -MAX_LOG_RATIO, MAX_LOG_RATIO)], axis=2)
    return scaled.reshape([-1, num_classes * 4])


def class_deltas(deltas: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """[N, 4C] class-specific deltas -> [N, 4], the 4 columns of each row's label."""
    num_classes = deltas.shape[1] // 4
    index = labels.astype("int64").reshape([-1, 1, 1]).tile([1, 1, 4])
    return paddle.take_along_axis(deltas.reshape([-1, num_classes, 4]), index, axis=1).reshape([-1, 4])


def _area(boxes: paddle.Tensor) -> paddle.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: paddle.Tensor, b: paddle.Tensor, eps: float = 1e-6) -> paddle.Tensor:
    """[len(a), len(b)] IoU (mmdet's bbox_overlaps: union floored at eps)."""
    top_left = paddle.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = paddle.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = paddle.clip(bottom_right - top_left, min=0)
    overlap = wh[:, :, 0] * wh[:, :, 1]
    union = paddle.clip(_area(a)[:, None] + _area(b)[None, :] - overlap, min=eps)
    return overlap / union


def giou_loss_sum(pred: paddle.Tensor, target: paddle.Tensor, eps: float = 1e-6) -> paddle.Tensor:
    """sum over rows of 1 - GIoU(pred, target), both [N, 4] (mmdet's giou_loss before averaging)."""
    top_left = paddle.maximum(pred[:, :2], target[:, :2])
    bottom_right = paddle.minimum(pred[:, 2:], target[:, 2:])
    wh = paddle.clip(bottom_right - top_left, min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = paddle.clip(_area(pred) + _area(target) - overlap, min=eps)
    enclose = paddle.clip(paddle.maximum(pred[:, 2:], target[:, 2:]) - paddle.minimum(pred[:, :2], target[:, :2]),
                          min=0)
    enclose_area = paddle.clip(enclose[:, 0] * enclose[:, 1], min=eps)
    giou = overlap / union - (enclose_area - union) / enclose_area
    return (1 - giou).sum()


# ---------------------------------------------------------------------------------------------- sampling
class Samples(NamedTuple):
    """One image's sampled RoIs of one stage, positives first (each group in candidate order)."""
    rois: paddle.Tensor        # [n, 4]
    labels: paddle.Tensor      # [n] int32: class of the matched ground truth, num_classes for background
    targets: paddle.Tensor     # [n, 4] matched ground-truth box (zeros for background when there is none)
    gt_index: paddle.Tensor    # [n] int64 index of the matched ground truth in the image's annotations
    is_gt: paddle.Tensor       # [n] bool: the RoI is a ground-truth box added as a proposal


def _random_subset(index: paddle.Tensor, count: int) -> paddle.Tensor:
    """`count` of `index` drawn without replacement, kept in their original order (mmdet sorts them too)."""
    if index.shape[0] <= count:
        return index
    chosen = paddle.randperm(index.shape[0])[:count]
    return paddle.sort(paddle.gather(index, chosen))


def sample_rois(proposals: paddle.Tensor, gt_boxes: paddle.Tensor, gt_labels: paddle.Tensor,
                gt_index: paddle.Tensor, iou_threshold: float, num: int, positive_fraction: float,
                num_classes: int, add_gt_as_proposals: bool = True) -> Samples:
    """mmdet's MaxIoUAssigner (positive at IoU >= threshold, negative below, no low-quality match) + RandomSampler.

    With `add_gt_as_proposals` the ground-truth boxes are prepended to the proposals and matched to themselves.
    Up to int(num * positive_fraction) positives are kept, then negatives up to `num` in all.
    """
    num_gt = gt_boxes.shape[0]
    added = num_gt if add_gt_as_proposals else 0  # the first `added` candidates are the ground-truth boxes
    candidates = paddle.concat([gt_boxes, proposals]) if added else proposals
    if num_gt == 0:
        chosen = _random_subset(paddle.arange(candidates.shape[0]), num)
        count = chosen.shape[0]
        return Samples(paddle.gather(candidates, chosen), paddle.full([count], num_classes, "int32"),
                       paddle.zeros([count, 4], candidates.dtype), paddle.zeros([count], "int64"),
                       paddle.zeros([count], "bool"))
    iou = box_iou(gt_boxes, candidates)
    best_iou, matched = iou.max(axis=0), iou.argmax(axis=0)
    is_gt = paddle.arange(candidates.shape[0]) < added
    if added:  # mmdet's AssignResult.add_gt_: a ground-truth proposal is matched to itself
        matched = paddle.concat([paddle.arange(added), matched[added:]])
    positive = paddle.logical_or(best_iou >= iou_threshold, is_gt)
    positives = _random_subset(paddle.nonzero(positive).flatten(), int(num * positive_fraction))
    negatives = _random_subset(paddle.nonzero(paddle.logical_not(positive)).flatten(), num - positives.shape[0])
    chosen = paddle.concat([positives, negatives])
    matched = paddle.gather(matched, chosen)
    labels = paddle.concat([paddle.gather(gt_labels, matched[:positives.shape[0]]).astype("int32"),
                            paddle.full([negatives.shape[0]], num_classes, "int32")])
    return Samples(paddle.gather(candidates, chosen), labels, paddle.gather(gt_boxes, matched),
                   paddle.gather(gt_index, matched), chosen < added)


def image_ground_truth(inputs: Dict, image: int) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """(boxes [G, 4], labels [G], their indices in the annotations) of one image, crowd boxes left out.

    The authors' cascade (ignore_iof_thr -1) neither matches nor adds crowd boxes.
    """
    boxes = inputs["gt_bbox"][image]
    labels = inputs["gt_class"][image].reshape([-1])
    index = paddle.arange(boxes.shape[0])
    crowd = inputs.get("is_crowd")
    if crowd is not None and boxes.shape[0] > 0:
        keep = paddle.nonzero(crowd[image].reshape([-1]) == 0).flatten()
        if keep.shape[0] < boxes.shape[0]:
            boxes, labels, index = (paddle.gather(t, keep) for t in (boxes, labels, index))
    return boxes, labels, index


def polygon_mask_targets(boxes: np.ndarray, gt_index: np.ndarray, polygons: Sequence[Sequence[Sequence[float]]],
                         resolution: int) -> np.ndarray:
    """[n, R, R] uint8 mask targets: each box's ground-truth polygons cropped to the box and rasterised at R x R.

    mmdet's PolygonMasks.crop_and_resize + to_ndarray: sides under 1 px count as 1, and the scales are float32 (what
    mmdet computes under NumPy 2; NumPy 1 gives float64, ~1e-7 apart). PaddleDetection's own rasteriser moves a
    float64 polygon array in place, so a ground truth shared by several RoIs would be shifted again for each.
    """
    from pycocotools import mask as mask_util

    targets = np.zeros((len(boxes), resolution, resolution), np.uint8)
    for row, (box, index) in enumerate(zip(np.asarray(boxes, np.float32), gt_index)):
        x1, y1, x2, y2 = box
        scale = np.float32(resolution) / np.maximum(np.maximum(np.stack([x2 - x1, y2 - y1]), 1), np.float32(0.1))
        parts = []
        for polygon in polygons[int(index)]:
            points = np.array(polygon, np.float64).reshape(-1, 2)
            parts.append(((points - box[:2]) * scale).ravel())
        rle = mask_util.merge(mask_util.frPyObjects(parts, resolution, resolution))
        targets[row] = mask_util.decode(rle)
    return targets


def per_box_image_shape(im_shape: paddle.Tensor, rois_num: paddle.Tensor) -> paddle.Tensor:
    """[sum(rois_num), 2]: the (height, width) of each box's image."""
    # box i belongs to the image whose running count of boxes first exceeds i; not repeat_interleave, which
    # OpenVINO's Paddle front end cannot convert
    ends = paddle.cumsum(rois_num.astype("int64"))
    box = paddle.arange(paddle.sum(rois_num.astype("int64")), dtype="int64")
    image = paddle.sum((box.unsqueeze(1) >= ends.unsqueeze(0)).astype("int64"), axis=1)
    return paddle.gather(im_shape, image)


# ---------------------------------------------------------------------------------------------- layers
class ConvBN(nn.Layer):
    """3x3 conv (no bias) + BatchNorm + ReLU: mmcv's ConvModule with a norm. (The authors' SyncBN: PaddleDetection's
    trainer converts BatchNorm layers to SyncBatchNorm on several GPUs when the config's norm_type is sync_bn.)"""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # mmcv: kaiming normal, fan_out, ReLU gain; BN weight 1, bias 0
        self.conv = nn.Conv2D(in_channels, out_channels, 3, padding=1, bias_attr=False,
                              weight_attr=paddle.ParamAttr(initializer=KaimingNormal(fan_in=out_channels * 9)))
        self.bn = nn.BatchNorm2D(out_channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ConvFCBoxStage(nn.Layer):
    """One stage's box head: [N, C, R, R] RoI features -> (logits [N, classes + 1], deltas [N, 4 * classes]).

    mmdet's ConvFCBBoxHead with shared convs and one shared FC (`Shared4Conv1FCBBoxHead`); background last.
    """

    def __init__(self, in_channels: int, num_convs: int, conv_channels: int, fc_channels: int, resolution: int,
                 num_classes: int):
        super().__init__()
        self.convs = nn.LayerList([ConvBN(in_channels if i == 0 else conv_channels, conv_channels)
                                   for i in range(num_convs)])
        flat = (conv_channels if num_convs else in_channels) * resolution * resolution
        zero = paddle.ParamAttr(initializer=Constant(0.0))
        self.fc = nn.Linear(flat, fc_channels, weight_attr=paddle.ParamAttr(initializer=XavierUniform()),
                            bias_attr=zero)
        self.score = nn.Linear(fc_channels, num_classes + 1, bias_attr=zero,
                               weight_attr=paddle.ParamAttr(initializer=Normal(0.0, 0.01)))
        self.delta = nn.Linear(fc_channels, 4 * num_classes, bias_attr=zero,
                               weight_attr=paddle.ParamAttr(initializer=Normal(0.0, 0.001)))

    def forward(self, feats: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        for conv in self.convs:
            feats = conv(feats)
        hidden = F.relu(self.fc(paddle.flatten(feats, start_axis=1)))
        return self.score(hidden), self.delta(hidden)


class FCNMaskStage(nn.Layer):
    """One stage's mask head: [N, C, 14, 14] RoI features -> [N, classes, 28, 28] logits (mmdet's FCNMaskHead)."""

    def __init__(self, in_channels: int, num_convs: int, conv_channels: int, num_classes: int):
        super().__init__()
        self.convs = nn.LayerList([
            nn.Conv2D(in_channels if i == 0 else conv_channels, conv_channels, 3, padding=1,
                      weight_attr=paddle.ParamAttr(initializer=KaimingNormal(fan_in=conv_channels * 9)))
            for i in range(num_convs)])
        zero = paddle.ParamAttr(initializer=Constant(0.0))
        width = conv_channels if num_convs else in_channels
        self.upsample = nn.Conv2DTranspose(width, conv_channels, 2, stride=2, bias_attr=zero,
                                           weight_attr=paddle.ParamAttr(initializer=KaimingNormal(fan_in=width * 4)))
        self.logits = nn.Conv2D(conv_channels, num_classes, 1, bias_attr=zero,
                                weight_attr=paddle.ParamAttr(initializer=KaimingNormal(fan_in=num_classes)))

    def forward(self, feats: paddle.Tensor) -> paddle.Tensor:
        for conv in self.convs:
            feats = F.relu(conv(feats))
        return self.logits(F.relu(self.upsample(feats)))


def _check_stages(name: str, **lists: Sequence) -> int:
    lengths = {key: len(value) for key, value in lists.items()}
    if len(set(lengths.values())) != 1 or not min(lengths.values()):
        raise SwinInputError(f"{name}: {', '.join(f'{k} has {n}' for k, n in lengths.items())} entries: expected "
                             "one per cascade stage, the same number in each")
    return next(iter(lengths.values()))


def _roi_extractor(roi_extractor) -> RoIAlign:
    return RoIAlign(**roi_extractor) if isinstance(roi_extractor, dict) else roi_extractor


def _head_config(cfg, input_shape) -> dict:
    """A RoI head's arguments from its config and the FPN's shapes: input channels and the RoIAlign settings."""
    shape = input_shape[0] if isinstance(input_shape, (list, tuple)) else input_shape
    settings = dict(cfg["roi_extractor"])
    settings.update(RoIAlign.from_config(cfg, input_shape))
    return {"in_channel": shape.channels, "roi_extractor": settings}


def _class_channel(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """[N, R, R]: each RoI's channel of its label from mask logits [N, C, R, R]."""
    index = labels.astype("int64").reshape([-1, 1, 1, 1]).tile([1, 1] + logits.shape[2:])
    return paddle.take_along_axis(logits, index, axis=1)[:, 0]


# ---------------------------------------------------------------------------------------------- box head
class CascadeConvFCHead(nn.Layer):
    """The authors' cascade box head (mmdet CascadeRoIHead + Shared4Conv1FCBBoxHead), PaddleDetection's interface.

    Training: `forward(feats, rois, rois_num, inputs)` -> (losses, None); every stage's samples stay available to
    the mask head through `get_assigned_rois()` / `get_assigned_targets()` (lists over stages). Evaluation: ->
    ((deltas [N, 4 * classes], probabilities [N, classes + 1]), head) with the last stage's deltas already scaled
    by its stds (RCNNBox with prior_box_var [1, 1, 1, 1] decodes them), and `get_refined_rois()` the boxes they
    apply to.
    """
    __shared__ = ["num_classes", "norm_type", "stage_loss_weights"]

    def __init__(self, in_channel: int = 256, roi_extractor: Optional[dict] = None, num_classes: int = 80,
                 num_convs: int = 4, conv_channels: int = 256, fc_channels: int = 1024,
                 norm_type: str = "bn", stage_stds: Sequence[Sequence[float]] = STAGE_STDS,
                 stage_iou: Sequence[float] = STAGE_IOU, stage_loss_weights: Sequence[float] = STAGE_LOSS_WEIGHTS,
                 rois_per_image: int = 512, positive_fraction: float = 0.25, add_gt_as_proposals: bool = True,
                 giou_loss_weight: float = 10.0):
        super().__init__()
        if norm_type not in ("bn", "sync_bn"):
            raise SwinInputError(f"CascadeConvFCHead: norm_type {norm_type!r}: expected 'bn' or 'sync_bn' "
                                 "(PaddleDetection's trainer turns 'sync_bn' into SyncBatchNorm on several GPUs)")
        self.num_stages = _check_stages("CascadeConvFCHead", stage_stds=stage_stds, stage_iou=stage_iou,
                                        stage_loss_weights=stage_loss_weights)
        self.roi_extractor = _roi_extractor(roi_extractor or {"resolution": 7, "sampling_ratio": 0,
                                                              "aligned": True})
        self.num_classes = num_classes
        self.stage_stds = [tuple(float(v) for v in s) for s in stage_stds]
        self.stage_iou = [float(v) for v in stage_iou]
        self.stage_loss_weights = [float(v) for v in stage_loss_weights]
        self.rois_per_image = rois_per_image
        self.positive_fraction = positive_fraction
        self.add_gt_as_proposals = add_gt_as_proposals
        self.giou_loss_weight = giou_loss_weight
        self.fc_channels = fc_channels
        resolution = self.roi_extractor.resolution
        self.stages = nn.LayerList([ConvFCBoxStage(in_channel, num_convs, conv_channels, fc_channels, resolution,
                                                   num_classes) for _ in range(self.num_stages)])
        self.assigned_rois: Tuple[list, list] = ([], [])
        self.assigned_targets: list = []
        self.refined_rois = None

    @classmethod
    def from_config(cls, cfg, input_shape):
        return _head_config(cfg, input_shape)

    @property
    def out_shape(self) -> List[ShapeSpec]:
        return [ShapeSpec(channels=self.fc_channels)]

    def get_head(self):
        return self.stages[-1]

    def get_assigned_rois(self):
        """([stage][image] sampled RoIs, [stage] RoI counts per image)."""
        return self.assigned_rois

    def get_assigned_targets(self):
        """[stage] (labels per image, matched boxes per image, matched annotation indices per image)."""
        return self.assigned_targets

    def get_refined_rois(self):
        return self.refined_rois

    def forward(self, body_feats=None, rois=None, rois_num=None, inputs=None):
        if self.training:
            return self.forward_train(body_feats, rois, inputs), None
        return self.forward_test(body_feats, rois, rois_num, inputs["im_shape"]), self.stages[-1]

    # -- training
    def forward_train(self, body_feats, proposals: List[paddle.Tensor], inputs: Dict) -> Dict[str, paddle.Tensor]:
        ground_truth = [image_ground_truth(inputs, i) for i in range(len(proposals))]
        im_shape = inputs["im_shape"]
        losses, self.assigned_targets, stage_rois, stage_rois_num = {}, [], [], []
        for stage, head in enumerate(self.stages):
            samples = [sample_rois(p.detach(), *gt, self.stage_iou[stage], self.rois_per_image, self.positive_fraction,
                                   self.num_classes, self.add_gt_as_proposals)
                       for p, gt in zip(proposals, ground_truth)]
            rois = [s.rois for s in samples]
            rois_num = paddle.to_tensor([s.rois.shape[0] for s in samples], "int32")
            scores, deltas = head(self.roi_extractor(body_feats, rois, rois_num))
            labels = paddle.concat([s.labels for s in samples])
            cls_loss, box_loss = self.stage_losses(stage, scores, deltas, paddle.concat(rois), labels,
                                                   paddle.concat([s.targets for s in samples]))
            weight = self.stage_loss_weights[stage]
            losses[f"loss_bbox_cls_stage{stage}"] = cls_loss * weight
            losses[f"loss_bbox_reg_stage{stage}"] = box_loss * weight
            stage_rois.append(rois)
            stage_rois_num.append(rois_num)
            self.assigned_targets.append(([s.labels for s in samples], [s.targets for s in samples],
                                          [s.gt_index for s in samples]))
            if stage < self.num_stages - 1:
                proposals = self.refine_for_training(stage, samples, scores.detach(), deltas.detach(), im_shape)
        self.assigned_rois = (stage_rois, stage_rois_num)
        return losses

    def stage_losses(self, stage: int, scores, deltas, rois, labels, targets) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """(cross entropy, GIoU x weight) averaged over all the stage's samples, as mmdet's BBoxHead.loss."""
        count = float(labels.shape[0]) + FLOAT32_EPS  # mmdet divides by its avg_factor + eps
        cls_loss = F.cross_entropy(scores, labels.astype("int64"), reduction="sum") / count
        positive = paddle.nonzero(labels < self.num_classes).flatten()
        if positive.shape[0] == 0:
            return cls_loss, deltas.sum() * 0.0
        pos_labels = paddle.gather(labels, positive)
        boxes = decode_deltas(paddle.gather(rois, positive),
                              class_deltas(paddle.gather(deltas, positive), pos_labels), self.stage_stds[stage])
        box_loss = giou_loss_sum(boxes, paddle.gather(targets, positive)) * self.giou_loss_weight / count
        return cls_loss, box_loss

    def refine_for_training(self, stage: int, samples: List[Samples], scores, deltas, im_shape) -> List[paddle.Tensor]:
        """Next stage's proposals per image: each RoI moved by its ground-truth label's deltas (positives) or its
        predicted label's (negatives), clipped to its image; the ground-truth RoIs dropped (mmdet's refine_bboxes)."""
        labels = paddle.concat([s.labels for s in samples]).astype("int64")
        predicted = paddle.argmax(scores[:, :-1], axis=1)
        labels = paddle.where(labels == self.num_classes, predicted, labels)
        rois_num = paddle.to_tensor([s.rois.shape[0] for s in samples], "int32")
        boxes = decode_deltas(paddle.concat([s.rois for s in samples]), class_deltas(deltas, labels),
                              self.stage_stds[stage], per_box_image_shape(im_shape, rois_num))
        refined, start = [], 0
        for s in samples:
            count = s.rois.shape[0]
            keep = paddle.nonzero(paddle.logical_not(s.is_gt)).flatten()
            refined.append(paddle.gather(boxes[start:start + count], keep).detach())
            start += count
        return refined

    # -- evaluation
    def forward_test(self, body_feats, rois, rois_num, im_shape):
        """((deltas scaled for RCNNBox, class probabilities), ...): mmdet's CascadeRoIHead.simple_test up to NMS."""
        boxes = paddle.concat(rois)
        bounds = per_box_image_shape(im_shape, rois_num)
        logits_sum = None
        for stage, head in enumerate(self.stages):
            scores, deltas = head(self.roi_extractor(body_feats, [boxes], rois_num))
            logits_sum = scores if logits_sum is None else logits_sum + scores
            if stage < self.num_stages - 1:
                labels = paddle.argmax(scores[:, :-1], axis=1)
                boxes = decode_deltas(boxes, class_deltas(deltas, labels), self.stage_stds[stage], bounds)
        self.refined_rois = self._per_image(boxes, rois_num)
        probabilities = F.softmax(logits_sum / float(self.num_stages), axis=-1)
        return scale_deltas(deltas, self.stage_stds[-1]), probabilities

    @staticmethod
    def _per_image(boxes: paddle.Tensor, rois_num: paddle.Tensor):
        """The boxes as RCNNBox takes RoIs: a list per image in eager mode; in a static graph (export) an array
        holding them all, as the RPN hands over its proposals there, so that RCNNBox reads the batch size from
        im_shape and exports serve any batch size (PaddleDetection's own CascadeHead exports batch 1 only)."""
        if paddle.in_dynamic_mode():
            return paddle.split(boxes, [int(n) for n in rois_num.numpy()])
        array = paddle.tensor.create_array("float32")
        paddle.tensor.array_write(boxes, paddle.zeros([1], "int64"), array)
        return array


# ---------------------------------------------------------------------------------------------- mask head
class CascadeFCNMaskHead(nn.Layer):
    """One FCN mask head per cascade stage (mmdet's CascadeRoIHead mask branch), PaddleDetection's interface.

    Training: called as CascadeRCNN calls a mask head, with the box head's per-stage samples; each stage's head is
    trained on its stage's positives (binary cross entropy at the label's channel, averaged over the positives'
    pixels) times the stage weight. Evaluation: `forward(feats, dets [N, 6], dets_num, inputs)` -> [N, 28, 28], the
    mean over stages of the sigmoid mask of each detection's label.
    """
    __shared__ = ["num_classes", "stage_loss_weights", "export_onnx"]

    def __init__(self, in_channel: int = 256, roi_extractor: Optional[dict] = None, num_classes: int = 80,
                 num_convs: int = 4, conv_channels: int = 256, mask_resolution: int = 28,
                 stage_loss_weights: Sequence[float] = STAGE_LOSS_WEIGHTS, export_onnx: bool = False):
        super().__init__()
        self.num_stages = _check_stages("CascadeFCNMaskHead", stage_loss_weights=stage_loss_weights)
        self.roi_extractor = _roi_extractor(roi_extractor or {"resolution": 14, "sampling_ratio": 0,
                                                              "aligned": True})
        self.num_classes = num_classes
        self.mask_resolution = mask_resolution
        self.stage_loss_weights = [float(v) for v in stage_loss_weights]
        self.export_onnx = export_onnx
        self.stages = nn.LayerList([FCNMaskStage(in_channel, num_convs, conv_channels, num_classes)
                                    for _ in range(self.num_stages)])

    @classmethod
    def from_config(cls, cfg, input_shape):
        return _head_config(cfg, input_shape)

    def forward(self, body_feats, rois, rois_num, inputs, targets=None, bbox_feat=None, feat_func=None):
        if self.training:
            return self.forward_train(body_feats, rois, rois_num, inputs, targets)
        return self.forward_test(body_feats, rois, rois_num)

    def forward_train(self, body_feats, stage_rois, stage_rois_num, inputs, stage_targets) -> Dict[str, paddle.Tensor]:
        if not (len(stage_rois) == len(stage_targets) == self.num_stages):
            raise SwinInputError(f"CascadeFCNMaskHead has {self.num_stages} stages but got samples of "
                                 f"{len(stage_rois)}: pair it with CascadeConvFCHead of as many stages")
        losses = {}
        for stage, (rois, (labels, _, gt_index)) in enumerate(zip(stage_rois, stage_targets)):
            positives = [self.positives(*args, polygons) for *args, polygons in
                         zip(rois, labels, gt_index, inputs["gt_poly"])]
            mask_rois = [p[0] for p in positives]
            mask_rois_num = paddle.to_tensor([p[0].shape[0] for p in positives], "int32")
            classes, masks, weights = (paddle.concat([p[i] for p in positives]) for i in (1, 2, 3))
            logits = self.stages[stage](self.roi_extractor(body_feats, mask_rois, mask_rois_num))
            losses[f"loss_mask_stage{stage}"] = self.mask_loss(logits, classes, masks, weights) * \
                self.stage_loss_weights[stage]
        return losses

    def positives(self, rois, labels, gt_index, polygons):
        """One image's positive RoIs, their classes, mask targets and weights 1. An image without positives gives
        its first RoI with weight 0 instead, so that every mask parameter stays in the graph (as PaddleDetection
        does: several-GPU training needs it)."""
        index = paddle.nonzero(labels < self.num_classes).flatten()
        if index.shape[0] == 0:
            zeros = paddle.zeros([1, self.mask_resolution, self.mask_resolution], "float32")
            return rois[:1], paddle.zeros([1], "int64"), zeros, paddle.zeros([1], "float32")
        boxes = paddle.gather(rois, index)
        targets = polygon_mask_targets(boxes.numpy(), paddle.gather(gt_index, index).numpy(), polygons,
                                       self.mask_resolution)
        return (boxes, paddle.gather(labels, index).astype("int64"), paddle.to_tensor(targets, "float32"),
                paddle.ones([index.shape[0]], "float32"))

    @staticmethod
    def mask_loss(logits, classes, masks, weights) -> paddle.Tensor:
        """Binary cross entropy at each RoI's class channel, the mean over real positives' pixels (mmdet's
        mask_cross_entropy); a stand-in RoI for an image without positives has weight 0."""
        pixels = F.binary_cross_entropy_with_logits(_class_channel(logits, classes), masks, reduction="none")
        per_roi = pixels.mean(axis=[1, 2]) * weights
        return per_roi.sum() / paddle.clip(weights.sum(), min=1.0)

    def forward_test(self, body_feats, rois, rois_num) -> paddle.Tensor:
        # one assignment per branch and one return: what dy2static needs to export this
        if not self.export_onnx and rois.shape[0] == 0:
            masks = paddle.full([1, 1, 1], -1)  # what PaddleDetection's MaskHead returns for no detection
        else:
            masks = self.averaged_masks(body_feats, rois, rois_num)
        return masks

    def averaged_masks(self, body_feats, dets, dets_num) -> paddle.Tensor:
        """[N, R, R]: the mean over stages of the sigmoid mask of each detection's label (dets [N, 6])."""
        feats = self.roi_extractor(body_feats, [dets[:, 2:]], dets_num)
        total = None
        for head in self.stages:
            probability = F.sigmoid(_class_channel(head(feats), dets[:, 0]))
            total = probability if total is None else total + probability
        return total / float(self.num_stages)
