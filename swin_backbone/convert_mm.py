"""Map the authors' whole mmdetection (Cascade) Mask R-CNN and mmsegmentation UperNet checkpoints onto our models.

Pure functions from their state dict (numpy arrays, their names) to ours, given the target's parameter
shapes: PaddleDetection's MaskRCNN (FPN, RPNHead, BBoxHead with TwoFCHead, MaskHead with MaskFeat) and
CascadeRCNN (the same FPN and RPN, our CascadeConvFCHead and CascadeFCNMaskHead) as our det_configs build them,
and our SwinUperNet (swin_backbone/paddleseg.py). The backbone goes through `convert_state_dict`.

The two detection stacks compute the same functions once the weights are renamed (checked numerically
against the authors' code, tests/test_mm_parity.py): anchors are ordered location-major then by aspect ratio
0.5/1/2 with centre offset 0 in both; the box classifier puts background last (index num_classes) in both;
mmdet's delta stds (0.1, 0.1, 0.2, 0.2) are PaddleDetection's weights (10, 10, 5, 5); regression is
class-specific in both, in class order; RoIAlign is aligned with adaptive sampling and the same level
mapping; and both order COCO's 80 classes by category id. Linear weights are transposed ([out, in] in
torch, [in, out] in Paddle); convolution and transposed-convolution layouts are the same. BatchNorm's
running statistics become `_mean` / `_variance`; `num_batches_tracked` is a counter, not a weight.
"""
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .convert import ConversionReport, backbone_part, convert_state_dict
from .convert_sources import rename_by_rules
from .errors import CheckpointKeyError, CheckpointShapeError

# (a pattern matched against their whole name, a function of the match giving our name)
Rule = Tuple[str, Callable[[re.Match], str]]

_BN = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}


def _conv_module(ours: str) -> Callable[[re.Match], str]:
    """An mmcv ConvModule (`.conv.*`, `.bn.*`) onto PaddleSeg's ConvBNReLU (`._conv.*`, `._batch_norm.*`)."""
    def name(match: re.Match) -> str:
        part, leaf = match["part"], match["leaf"]
        return f"{ours.format(**match.groupdict())}.{'_conv' if part == 'conv' else '_batch_norm'}." + (
            leaf if part == "conv" else _BN[leaf])
    return name


_CONV_MODULE = r"\.(?P<part>conv|bn)\.(?P<leaf>weight|bias|running_mean|running_var)"


def _fpn_rpn_rules(num_levels: int) -> List[Rule]:
    """mmdetection's FPN (with `num_levels` inputs) and RPNHead onto PaddleDetection's (both detectors)."""
    def lateral(match: re.Match) -> str:
        i = int(match["i"])
        name = "fpn_inner_res5_sum" if i == num_levels - 1 else f"fpn_inner_res{i + 2}_sum_lateral"
        return f"neck.{name}.{match['leaf']}"

    return [
        (r"neck\.lateral_convs\.(?P<i>\d+)\.conv\.(?P<leaf>weight|bias)", lateral),
        (r"neck\.fpn_convs\.(?P<i>\d+)\.conv\.(?P<leaf>weight|bias)",
         lambda m: f"neck.fpn_res{int(m['i']) + 2}_sum.{m['leaf']}"),
        (r"rpn_head\.rpn_conv\.(?P<leaf>weight|bias)", lambda m: f"rpn_head.rpn_feat.rpn_conv.{m['leaf']}"),
        (r"rpn_head\.rpn_cls\.(?P<leaf>weight|bias)", lambda m: f"rpn_head.rpn_rois_score.{m['leaf']}"),
        (r"rpn_head\.rpn_reg\.(?P<leaf>weight|bias)", lambda m: f"rpn_head.rpn_rois_delta.{m['leaf']}"),
    ]


def mmdet_rules(num_levels: int) -> List[Rule]:
    """Renames from mmdetection's Mask R-CNN (FPN with `num_levels` inputs) to PaddleDetection's."""
    return _fpn_rpn_rules(num_levels) + [
        (r"roi_head\.bbox_head\.shared_fcs\.(?P<i>\d+)\.(?P<leaf>weight|bias)",
         lambda m: f"bbox_head.head.fc{int(m['i']) + 6}.{m['leaf']}"),
        (r"roi_head\.bbox_head\.fc_cls\.(?P<leaf>weight|bias)", lambda m: f"bbox_head.bbox_score.{m['leaf']}"),
        (r"roi_head\.bbox_head\.fc_reg\.(?P<leaf>weight|bias)", lambda m: f"bbox_head.bbox_delta.{m['leaf']}"),
        (r"roi_head\.mask_head\.convs\.(?P<i>\d+)\.conv\.(?P<leaf>weight|bias)",
         lambda m: f"mask_head.head.upsample.mask_inter_feat_{int(m['i']) + 1}.{m['leaf']}"),
        (r"roi_head\.mask_head\.upsample\.(?P<leaf>weight|bias)",
         lambda m: f"mask_head.head.upsample.conv5_mask.{m['leaf']}"),
        (r"roi_head\.mask_head\.conv_logits\.(?P<leaf>weight|bias)",
         lambda m: f"mask_head.mask_fcn_logits.{m['leaf']}"),
    ]


# Layers whose size follows the number of classes: they may not fit a config with another class count.
MMDET_CLASS_LAYERS = ("bbox_head.bbox_score.", "bbox_head.bbox_delta.", "mask_head.mask_fcn_logits.")

_BOX_STAGE = r"roi_head\.bbox_head\.(?P<s>\d+)\."
_MASK_STAGE = r"roi_head\.mask_head\.(?P<s>\d+)\."


def _stage(ours: str) -> Callable[[re.Match], str]:
    """A rename inside one cascade stage: `ours` is formatted with the match's groups (s = the stage)."""
    return lambda m: ours.format(**m.groupdict())


def mmdet_cascade_rules(num_levels: int) -> List[Rule]:
    """Renames from mmdetection's Cascade Mask R-CNN with the authors' heads (per stage a ConvFCBBoxHead with 4
    shared convs + BN and 1 shared FC, and an FCNMaskHead) onto CascadeConvFCHead / CascadeFCNMaskHead."""
    return _fpn_rpn_rules(num_levels) + [
        (_BOX_STAGE + r"shared_convs\.(?P<i>\d+)\.conv\.weight",
         _stage("bbox_head.stages.{s}.convs.{i}.conv.weight")),
        (_BOX_STAGE + r"shared_convs\.(?P<i>\d+)\.bn\.(?P<leaf>weight|bias|running_mean|running_var)",
         lambda m: f"bbox_head.stages.{m['s']}.convs.{m['i']}.bn.{_BN[m['leaf']]}"),
        (_BOX_STAGE + r"shared_fcs\.0\.(?P<leaf>weight|bias)", _stage("bbox_head.stages.{s}.fc.{leaf}")),
        (_BOX_STAGE + r"fc_cls\.(?P<leaf>weight|bias)", _stage("bbox_head.stages.{s}.score.{leaf}")),
        (_BOX_STAGE + r"fc_reg\.(?P<leaf>weight|bias)", _stage("bbox_head.stages.{s}.delta.{leaf}")),
        (_MASK_STAGE + r"convs\.(?P<i>\d+)\.conv\.(?P<leaf>weight|bias)",
         _stage("mask_head.stages.{s}.convs.{i}.{leaf}")),
        (_MASK_STAGE + r"upsample\.(?P<leaf>weight|bias)", _stage("mask_head.stages.{s}.upsample.{leaf}")),
        (_MASK_STAGE + r"conv_logits\.(?P<leaf>weight|bias)", _stage("mask_head.stages.{s}.logits.{leaf}")),
    ]


def cascade_class_layers(num_stages: int) -> Tuple[str, ...]:
    """The cascade's layers sized by the class count, per stage."""
    return tuple(f"{head}.stages.{s}.{layer}." for s in range(num_stages)
                 for head, layer in (("bbox_head", "score"), ("bbox_head", "delta"), ("mask_head", "logits")))


def cascade_stages(weights: Mapping[str, np.ndarray]) -> int:
    """The number of cascade stages of an mmdetection checkpoint (0: not a cascade)."""
    found = {m["s"] for k in weights for m in [re.match(r"roi_head\.bbox_head\.(?P<s>\d+)\.", k)] if m}
    return len(found)


MMSEG_RULES: List[Rule] = [
    (r"decode_head\.psp_modules\.(?P<i>\d+)\.1" + _CONV_MODULE, _conv_module("decode_head.ppm.{i}")),
    (r"decode_head\.(?P<layer>bottleneck|fpn_bottleneck)" + _CONV_MODULE, _conv_module("decode_head.{layer}")),
    (r"decode_head\.(?P<layer>lateral_convs|fpn_convs)\.(?P<i>\d+)" + _CONV_MODULE,
     _conv_module("decode_head.{layer}.{i}")),
    (r"decode_head\.conv_seg\.(?P<leaf>weight|bias)", lambda m: f"decode_head.conv_seg.{m['leaf']}"),
    (r"auxiliary_head\.convs\.0" + _CONV_MODULE, _conv_module("auxiliary_head.conv")),
    (r"auxiliary_head\.conv_seg\.(?P<leaf>weight|bias)", lambda m: f"auxiliary_head.conv_seg.{m['leaf']}"),
]
MMSEG_CLASS_LAYERS = ("decode_head.conv_seg.", "auxiliary_head.conv_seg.")

_COUNTERS = ("num_batches_tracked",)


def convert_heads(source: Mapping[str, np.ndarray], target_shapes: Mapping[str, Tuple[int, ...]],
                  rules: Sequence[Rule], class_layers: Sequence[str], report: ConversionReport,
                  origin: str) -> Dict[str, np.ndarray]:
    """Rename and reshape the non-backbone weights by `rules`; class layers that do not fit are dropped."""
    converted: Dict[str, np.ndarray] = {}
    dropped_classes, counters = [], 0
    for name, value in source.items():
        if name.rsplit(".", 1)[-1] in _COUNTERS:  # a counter, not a weight: nothing to carry over
            counters += 1
            continue
        ours = rename_by_rules(name, rules)
        if ours is None or ours not in target_shapes:
            report.unexpected.append(name)
            continue
        if value.ndim == 2 and ours.endswith(".weight"):  # Linear: torch [out, in] -> Paddle [in, out]
            value = value.T
        target = tuple(target_shapes[ours])
        if value.shape != target:
            if ours.startswith(tuple(class_layers)):
                report.dropped.append(name)
                dropped_classes.append(name)
                continue
            raise CheckpointShapeError(f"{origin}: {name} (our {ours}) has shape {list(value.shape)}, the model "
                                       f"wants {list(target)}: does the config match the checkpoint?")
        converted[ours] = np.ascontiguousarray(value, dtype=np.float32)
    if counters:
        report.notes.append(f"skipped {counters} BatchNorm counters (num_batches_tracked): not weights")
    if dropped_classes:
        report.notes.append(f"the class layers ({', '.join(dropped_classes)}) do not fit the model's class count: "
                            "dropped, they start from scratch (fine-tuning on other classes)")
    return converted


def convert_full_model(weights: Mapping[str, np.ndarray], target_shapes: Mapping[str, Tuple[int, ...]],
                       rules: Sequence[Rule], class_layers: Sequence[str], origin: str = "checkpoint"
                       ) -> Tuple[Dict[str, np.ndarray], ConversionReport]:
    """A whole checkpoint (`backbone.*` plus heads) onto a model with parameter shapes `{name: shape}`."""
    backbone, _ = backbone_part(weights)
    backbone_target = {k[len("backbone."):]: v for k, v in target_shapes.items() if k.startswith("backbone.")}
    converted_backbone, report = convert_state_dict(backbone, backbone_target, torch_layout=True, origin=origin)
    heads = {k: v for k, v in weights.items() if not k.startswith("backbone.")}
    converted = {f"backbone.{k}": v for k, v in converted_backbone.items()}
    converted.update(convert_heads(heads, target_shapes, rules, class_layers, report, origin))
    report.unexpected = sorted(f"backbone.{k}" if k in backbone else k for k in report.unexpected)
    report.missing = sorted(k for k in target_shapes if k not in converted)
    if len(converted) == len(converted_backbone):
        raise CheckpointKeyError(f"{origin}: none of its head weights matches the model: is the config for the "
                                 "same kind of model?")
    return converted, report


def fpn_levels(weights: Mapping[str, np.ndarray]) -> int:
    """The number of FPN inputs of an mmdetection checkpoint."""
    return len({k.split(".")[2] for k in weights if k.startswith("neck.lateral_convs.")})


def convert_mmdet(weights: Mapping[str, np.ndarray], target_shapes: Mapping[str, Tuple[int, ...]],
                  origin: str = "checkpoint") -> Tuple[Dict[str, np.ndarray], ConversionReport]:
    """An mmdetection Mask R-CNN or Cascade Mask R-CNN state dict onto PaddleDetection's MaskRCNN or CascadeRCNN
    (with CascadeConvFCHead / CascadeFCNMaskHead) with our SwinBackbone; which one is read from the keys."""
    stages = cascade_stages(weights)
    target_is_cascade = any(k.startswith("bbox_head.stages.") for k in target_shapes)
    if bool(stages) != target_is_cascade:
        given = f"a {stages}-stage Cascade Mask R-CNN" if stages else "a Mask R-CNN"
        raise CheckpointKeyError(f"{origin} is {given}, the config builds a "
                                 f"{'Cascade Mask R-CNN' if target_is_cascade else 'Mask R-CNN'}: give a "
                                 f"det_configs/{'cascade_' if stages else ''}mask_rcnn_* config")
    if stages:
        return convert_full_model(weights, target_shapes, mmdet_cascade_rules(fpn_levels(weights)),
                                  cascade_class_layers(stages), origin)
    return convert_full_model(weights, target_shapes, mmdet_rules(fpn_levels(weights)), MMDET_CLASS_LAYERS, origin)


def convert_mmseg(weights: Mapping[str, np.ndarray], target_shapes: Mapping[str, Tuple[int, ...]],
                  origin: str = "checkpoint") -> Tuple[Dict[str, np.ndarray], ConversionReport]:
    """An mmsegmentation UperNet (+ FCN auxiliary head) state dict onto our SwinUperNet."""
    return convert_full_model(weights, target_shapes, MMSEG_RULES, MMSEG_CLASS_LAYERS, origin)


def backbone_architecture(weights: Mapping[str, np.ndarray], origin: str = "checkpoint") -> Dict[str, object]:
    """embed_dim, depths, num_heads and window_size of the Swin backbone in a checkpoint (authors' layout)."""
    backbone, _ = backbone_part(weights)
    if not {"patch_embed.proj.weight", "layers.0.blocks.0.attn.relative_position_bias_table"} <= set(backbone):
        raise CheckpointKeyError(f"{origin}: none of its {len(weights)} tensors matches a Swin model (its keys begin "
                                 f"{', '.join(sorted(weights)[:3])}): is it a Swin checkpoint?")
    embed_dim = int(backbone["patch_embed.proj.weight"].shape[0])
    depths, heads = [], []
    stage = 0
    while f"layers.{stage}.blocks.0.norm1.weight" in backbone:
        blocks = {int(k.split(".")[3]) for k in backbone if k.startswith(f"layers.{stage}.blocks.")}
        depths.append(max(blocks) + 1)
        heads.append(int(backbone[f"layers.{stage}.blocks.0.attn.relative_position_bias_table"].shape[1]))
        stage += 1
    table = backbone["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    return {"embed_dim": embed_dim, "depths": depths, "num_heads": heads,
            "window_size": (int(round(np.sqrt(table))) + 1) // 2}


# COCO's 80 categories in category-id order: mmdetection's CLASSES, and the class indices PaddleDetection's COCO
# reader assigns (it sorts the category ids of instances_*.json).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")
