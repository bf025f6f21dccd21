"""The authors' Cascade Mask R-CNN, converted, computes what mmdetection's code computes (test and training).

The oracle (tests/fixtures/mm_cascade_reference, see its README) comes from mmdetection 2.28's CascadeRCNN,
CascadeRoIHead, ConvFCBBoxHead (4 shared convs + BN, 1 FC), FCNMaskHead, GIoULoss, MaxIoUAssigner and RandomSampler,
run in PyTorch with small random weights saved as the released checkpoints are. Within 1e-4: each stage's scores and
deltas on given RoIs, the refined RoIs between stages, the final class probabilities (softmax of the stages' mean
logits), the final boxes before NMS (through PaddleDetection's own RCNNBox), the averaged mask probabilities; the
whole detector's boxes, classes and masks; and the training losses of all three stages on fixed proposals.
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import AUTHORS_RPN_YAML, FIXTURES, ROOT, by_score, require_fixture

pytestmark = pytest.mark.plugins  # PaddleDetection: Paddle 2.6 only

REF = os.path.join(FIXTURES, "mm_cascade_reference")
TOLERANCE = 1e-4


def fixture(name: str) -> str:
    return require_fixture(os.path.join(REF, name), "mmdet cascade reference fixture", f"see {REF}/README.md")


def arrays(name: str) -> dict:
    with np.load(fixture(name), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# The smoke config with the fixture model's widths: the authors' anchors, 80 classes, 512 RoIs per image.
CONFIG = """_BASE_: ['{base}']
num_classes: 80
SwinBackbone:
  embed_dim: 16
  depths: [1, 1, 1, 1]
  num_heads: [1, 1, 2, 2]
  window_size: 7
{rpn}
CascadeConvFCHead:
  conv_channels: 16
  fc_channels: 32
  rois_per_image: 512
CascadeFCNMaskHead:
  num_convs: 4
  conv_channels: 16
"""


def reference_config(base: str) -> str:
    """`base` with the fixture model's widths and the authors' RPN, as config text."""
    return CONFIG.format(base=base, rpn=AUTHORS_RPN_YAML)


# The oracle's training inputs (cascade_train.npz, as `train`) as the heads take them: FPN features, proposals and
# ground truth of two images; a snippet of the scripts below and of test_cascade.py's.
TRAINING_INPUTS = r"""feats = [t(train[f"P{i}"]) for i in range(2, 6)]
inputs = {"im_shape": t(train["img_shapes"].astype("float32")), "gt_bbox": [], "gt_class": [], "gt_poly": []}
proposals = []
for img in range(2):
    inputs["gt_bbox"].append(t(train[f"gt_boxes_{img}"]))
    inputs["gt_class"].append(t(train[f"gt_labels_{img}"].reshape(-1, 1).astype("int32")))
    count = len(train[f"gt_labels_{img}"])
    inputs["gt_poly"].append([[train[f"gt_polygon_{img}_{j}"].astype("float64")] for j in range(count)])
    proposals.append(t(train[f"proposals_{img}"]))
"""

SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
from ppdet.core.workspace import create
from swin_backbone.ppdet_cascade import class_deltas, decode_deltas, per_box_image_shape

REF = {ref!r}
def load(name):
    with np.load(REF + "/" + name) as npz:
        return {{k: npz[k] for k in npz.files}}
def diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
t = paddle.to_tensor

cfg = det_common.load_config({config!r}, {{}})
model = create(cfg.architecture)
model.set_state_dict(paddle.load({weights!r}))
model.eval()
box_head, mask_head = model.bbox_head, model.mask_head
result = {{}}
with paddle.no_grad():
    roi = load("cascade_roi.npz")
    feats = [t(roi[f"P{{i}}"]) for i in range(2, 6)]
    rois = t(roi["rois"][:, 1:])
    num = t([len(rois)], "int32")
    im_shape = t(roi["img_shape"].reshape(1, 2).astype("float32"))
    for i, stage in enumerate(box_head.stages):
        scores, deltas = stage(box_head.roi_extractor(feats, [rois], num))
        result[f"stage{{i}}_cls_score"] = diff(scores.numpy(), roi[f"stage{{i}}_cls_score"])
        result[f"stage{{i}}_bbox_pred"] = diff(deltas.numpy(), roi[f"stage{{i}}_bbox_pred"])
    # the refinement chain as the head runs it at test time, from the given RoIs
    scores0, deltas0 = box_head.stages[0](box_head.roi_extractor(feats, [rois], num))
    refined1 = decode_deltas(rois, class_deltas(deltas0, paddle.argmax(scores0[:, :-1], axis=1)),
                             box_head.stage_stds[0], per_box_image_shape(im_shape, num))
    result["refined_rois_1"] = diff(refined1.numpy(), roi["refined_rois_1"])
    deltas, probs = box_head.forward_test(feats, [rois], num, im_shape)
    refined = box_head.get_refined_rois()
    result["refined_rois_2"] = diff(paddle.concat(refined).numpy(), roi["refined_rois_2"])
    result["final_probs"] = diff(probs.numpy(), roi["final_probs"])
    (boxes, _), class_scores = model.bbox_post_process.decode((deltas, probs), (refined, num), im_shape,
                                                              t([[1.0, 1.0]], "float32"))
    result["final_boxes"] = diff(boxes.numpy(), roi["final_boxes"].reshape(len(rois), 80, 4))
    result["final_scores_are_foreground_probs"] = diff(class_scores.numpy(), roi["final_probs"][:, :80])
    dets = np.concatenate([roi["mask_labels"][:, None], np.ones((len(roi["mask_labels"]), 1)), roi["mask_boxes"]],
                          1).astype("float32")
    masks = mask_head(feats, t(dets), t([len(dets)], "int32"), {{}})
    result["mask_probs"] = diff(masks.numpy(), roi["mask_probs"])

    e2e = load("cascade_end2end.npz")
    h, w = (int(v) for v in e2e["img_shape"])
    out = model({{"image": t(e2e["image"]), "im_shape": t([[h, w]], "float32"),
                 "scale_factor": t([[1.0, 1.0]], "float32")}})
    result["end2end"] = {{"bbox": out["bbox"].numpy().tolist(),
                          "mask": out["mask"].numpy().astype("uint8").tolist()}}

# training: the box and mask heads on fixed proposals and ground truth, batch statistics in the BatchNorms
train = load("cascade_train.npz")
{training_inputs}
box_head.train()
mask_head.train()
losses, _ = box_head(feats, proposals, t([len(p) for p in proposals], "int32"), inputs)
stage_rois, stage_num = box_head.get_assigned_rois()
targets = box_head.get_assigned_targets()
losses.update(mask_head(feats, stage_rois, stage_num, inputs, targets))
result["losses"] = {{k: float(v) for k, v in losses.items()}}
result["samples"] = [{{"rois": paddle.concat(r).numpy().tolist(), "num": n.numpy().tolist(),
                       "labels": paddle.concat(l[0]).numpy().tolist()}}
                     for r, n, l in zip(stage_rois, stage_num, targets)]
print("RESULT", json.dumps(result))
"""


def test_fixtures_are_what_the_generator_wrote():
    """Every file listed in SHA256SUMS (the generator's record of its output) is there, byte for byte."""
    listed = [line.split() for line in open(fixture("SHA256SUMS")).read().splitlines() if line.strip()]
    assert sorted(name for _, name in listed) == ["cascade_end2end.npz", "cascade_roi.npz", "cascade_train.npz",
                                                  "cascade_weights.pth"]
    for digest, name in listed:
        assert hashlib.sha256(open(fixture(name), "rb").read()).hexdigest() == digest, name


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mm_cascade")
    config = folder / "cascade_mm_reference.yml"
    config.write_text(reference_config(os.path.join(ROOT, "det_configs", "cascade_mask_rcnn_swin_smoke.yml")))
    weights = str(folder / "cascade.pdparams")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"),
                           fixture("cascade_weights.pth"), weights, "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "a Cascade Mask R-CNN, 3 stages" in proc.stdout and "all keys matched" in proc.stdout, proc.stdout
    assert "skipped 12 BatchNorm counters" in proc.stdout, proc.stdout
    code = SCRIPT.format(tools=os.path.join(ROOT, "tools"), ref=REF, config=str(config), weights=weights,
                         training_inputs=TRAINING_INPUTS)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_each_stage_scores_and_deltas_on_given_rois(results, stage):
    for part in ("cls_score", "bbox_pred"):
        assert results[f"stage{stage}_{part}"] <= TOLERANCE, (part, results[f"stage{stage}_{part}"])


def test_refined_rois_between_stages(results):
    assert results["refined_rois_1"] <= TOLERANCE and results["refined_rois_2"] <= TOLERANCE, results


def test_final_probabilities_are_softmax_of_mean_logits(results):
    assert results["final_probs"] <= TOLERANCE and results["final_scores_are_foreground_probs"] <= TOLERANCE


def test_final_boxes_before_nms_through_rcnnbox(results):
    assert results["final_boxes"] <= TOLERANCE, results["final_boxes"]


def test_averaged_mask_probabilities(results):
    assert results["mask_probs"] <= TOLERANCE, results["mask_probs"]


def test_end_to_end_boxes_classes_and_masks(results):
    e2e = arrays("cascade_end2end.npz")
    bbox, masks, _ = by_score(results["end2end"])
    assert len(bbox) == len(e2e["boxes"]) == 6, (bbox, e2e["boxes"])
    np.testing.assert_array_equal(bbox[:, 0].astype(int), e2e["labels"])
    assert float(np.abs(bbox[:, 1] - e2e["scores"]).max()) <= TOLERANCE
    assert float(np.abs(bbox[:, 2:] - e2e["boxes"]).max()) <= 1e-3
    assert masks.shape == e2e["masks"].shape
    # 22 pasted probabilities lie within 1e-3 of the 0.5 threshold in the fixture: those may flip
    assert int((masks != e2e["masks"]).sum()) <= 22, int((masks != e2e["masks"]).sum())


def test_training_samples_every_stage_as_mmdet(results):
    """Each stage re-assigns at its IoU and re-samples with the ground truth prepended; stages 2 and 3 start from
    the previous stage's RoIs refined with ground-truth labels for positives, ground-truth RoIs dropped."""
    train = arrays("cascade_train.npz")
    for stage, ours in enumerate(results["samples"]):
        assert ours["num"] == train[f"stage{stage}_rois_num"].tolist(), stage
        np.testing.assert_array_equal(ours["labels"], train[f"stage{stage}_labels"])
        assert diff(ours["rois"], train[f"stage{stage}_rois"]) <= TOLERANCE, stage


def diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_training_losses_of_each_stage(results, stage):
    """Cross entropy, GIoU (weight 10, boxes decoded with the stage's stds) and the mask loss, times the stage's
    weight 1 / 0.5 / 0.25, on the same samples as mmdet."""
    train = arrays("cascade_train.npz")
    losses = results["losses"]
    pairs = {"loss_bbox_cls": "loss_cls", "loss_bbox_reg": "loss_bbox", "loss_mask": "loss_mask"}
    for ours, theirs in pairs.items():
        got, want = losses[f"{ours}_stage{stage}"], float(train[f"s{stage}_{theirs}"])
        assert abs(got - want) <= TOLERANCE * max(1.0, abs(want)), (ours, got, want)
