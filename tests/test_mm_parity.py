"""The authors' whole Mask R-CNN and UperNet checkpoints, converted, compute what their code computes.

The oracle (tests/fixtures/mm_reference, see its README) comes from mmdetection 2.x / mmsegmentation 0.x
modules run in PyTorch with small random weights saved as the released checkpoints are. Each part is compared
at the README's figures, within 1e-5 of each array's largest magnitude: FPN, RPN logits and anchors, RoI heads,
UperNet heads, the segmenter's logits; then the final boxes (1e-3), scores (1e-4), classes and masks of the whole detector, and the
segmenter's labels, where both pipelines run the same algorithm.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import AUTHORS_RPN_YAML, FIXTURES, ROOT, by_score, require_fixture

pytestmark = pytest.mark.plugins  # PaddleDetection / PaddleSeg: Paddle 2.6 only

MM = os.path.join(FIXTURES, "mm_reference")
TOLERANCE = 1e-5  # the README's figure for every part, relative to its largest value (measured: <= 7.6e-7)
SCORE_TOLERANCE = 1e-4  # end-to-end detection scores and RPN proposal scores, as the README states
MASK_MARGIN = 1e-4  # mask pixels whose pasted probability is this close to the 0.5 threshold may flip


def fixture(name: str) -> str:
    return require_fixture(os.path.join(MM, name), "mmdet/mmseg reference fixture", f"see {MM}/README.md")


def arrays(name: str) -> dict:
    with np.load(fixture(name), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def backbone_yaml(checkpoint: str, indent: str) -> str:
    from swin_backbone.convert import read_weights
    from swin_backbone.convert_mm import backbone_architecture

    arch = backbone_architecture(read_weights(checkpoint)[0])
    return "\n".join(f"{indent}{key}: {value}" for key, value in arch.items())


@pytest.fixture(scope="module")
def det_config(tmp_path_factory):
    """The smoke config with the fixture detector's architecture: the authors' anchors and mask head, 80 classes."""
    path = tmp_path_factory.mktemp("mm_det") / "mask_rcnn_mm_reference.yml"
    path.write_text(f"""_BASE_: ['{os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml")}']
num_classes: 80
SwinBackbone:
{backbone_yaml(fixture("det_weights.pth"), "  ")}
{AUTHORS_RPN_YAML}
MaskFeat:
  num_convs: 4
  out_channel: 32
""")
    return str(path)


@pytest.fixture(scope="module")
def seg_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("mm_seg") / "upernet_mm_reference.yml"
    path.write_text(f"""_base_: '{os.path.join(ROOT, "seg_configs", "upernet_swin_smoke.yml")}'
model:
  num_classes: 150
  backbone:
{backbone_yaml(fixture("seg_weights.pth"), "    ")}
""")
    return str(path)


def convert(checkpoint: str, config: str, output: str) -> str:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"), checkpoint, output,
                           "--config", config], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def helpers() -> str:
    return f"MM = {MM!r}\n" + SCRIPT_HELPERS


def run_script(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


# Shared by the scripts below (run in a fresh process each: PaddleDetection's config is one global).
SCRIPT_HELPERS = r"""
import json
import numpy as np


def load(name):
    with np.load(MM + "/" + name) as npz:
        return {k: npz[k] for k in npz.files}


def diff(a, b):
    # max abs difference over the reference's largest magnitude (when above 1): float32 logits of ~14 have a
    # spacing of 1e-6, so BLAS rounding alone moves them by several 1e-6 there
    b = np.asarray(b, np.float64)
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(1.0, np.abs(b).max()))
"""

DET_PARTS = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
from ppdet.core.workspace import create
{helpers}
cfg = det_common.load_config({config!r}, {{}})
model = create(cfg.architecture)
model.set_state_dict(paddle.load({weights!r}))
model.eval()
result = {{}}
with paddle.no_grad():
    fpn = load("det_fpn.npz")
    feats = model.neck([paddle.to_tensor(fpn[f"C{{i}}"]) for i in range(2, 6)])
    result["fpn"] = [diff(f.numpy(), fpn[f"P{{i + 2}}"]) for i, f in enumerate(feats)]

    rpn = load("det_rpn.npz")
    head = model.rpn_head
    rpn_feats = head.rpn_feat(feats)
    scores = [head.rpn_rois_score(f) for f in rpn_feats]
    deltas = [head.rpn_rois_delta(f) for f in rpn_feats]
    anchors = head.anchor_generator(rpn_feats)
    result["rpn_cls"] = [diff(s.numpy(), rpn[f"cls_{{i}}"]) for i, s in enumerate(scores)]
    result["rpn_reg"] = [diff(d.numpy(), rpn[f"reg_{{i}}"]) for i, d in enumerate(deltas)]
    result["anchors"] = [diff(a.numpy(), rpn[f"anchors_{{i}}"]) for i, a in enumerate(anchors)]
    im_shape = paddle.to_tensor(rpn["img_shape"].reshape(1, 2).astype("float32"))
    boxes, probs = [], []
    for s, d, a in zip(scores, deltas, anchors):
        rois, prob, _, _ = head.test_proposal(scores=s, bbox_deltas=d, anchors=a, im_shape=im_shape)
        boxes.append(rois.numpy()); probs.append(prob.numpy().ravel())
    boxes, probs = np.concatenate(boxes), np.concatenate(probs)
    top = np.argsort(-probs, kind="stable")[:1000]
    result["proposals"] = {{"boxes": boxes[top].tolist(), "scores": probs[top].tolist()}}

    roi = load("det_roi.npz")
    rois = [paddle.to_tensor(roi["rois"][:, 1:].astype("float32"))]
    rois_num = paddle.to_tensor([len(roi["rois"])], "int32")
    bbox_head = model.bbox_head
    bbox_feat = bbox_head.head(bbox_head.roi_extractor(feats, rois, rois_num))
    result["cls_score"] = diff(bbox_head.bbox_score(bbox_feat).numpy(), roi["cls_score"])
    result["bbox_pred"] = diff(bbox_head.bbox_delta(bbox_feat).numpy(), roi["bbox_pred"])
    mask_head = model.mask_head
    mask_logits = mask_head.mask_fcn_logits(mask_head.head(mask_head.roi_extractor(feats, rois, rois_num)))
    result["mask_pred"] = diff(mask_logits.numpy()[:, roi["mask_classes"]], roi["mask_pred"])

    e2e = load("det_end2end.npz")
    h, w = (int(v) for v in e2e["img_shape"][:2])
    inputs = {{"image": paddle.to_tensor(e2e["image"]), "im_shape": paddle.to_tensor([[h, w]], "float32"),
              "scale_factor": paddle.to_tensor([[1.0, 1.0]], "float32")}}
    out = model(inputs)
    result["end2end"] = {{"bbox": out["bbox"].numpy().tolist(), "mask": out["mask"].numpy().astype("uint8").tolist()}}
    # the pixels whose pasted probability lies within MASK_MARGIN of the threshold: the masks at 0.5 -/+ it differ
    post = model.mask_post_process
    near = []
    for shift in (-{margin}, {margin}):
        post.binary_thresh = 0.5 + shift
        near.append(model(inputs)["mask"].numpy().astype(bool))
        post.binary_thresh = 0.5
    result["end2end"]["near_threshold"] = (near[0] != near[1]).astype("uint8").tolist()
print("RESULT", json.dumps(result))
"""


@pytest.fixture(scope="module")
def det_results(det_config, tmp_path_factory):
    weights = str(tmp_path_factory.mktemp("mm_det_weights") / "mask_rcnn.pdparams")
    report = convert(fixture("det_weights.pth"), det_config, weights)
    assert "a full mmdetection detector" in report and "all keys matched" in report, report
    dropped = [line for line in report.splitlines() if line.startswith("dropped") and "derived buffers" not in line]
    assert "warning:" not in report and not dropped, report  # COCO's 80 classes, in their order
    return run_script(DET_PARTS.format(tools=os.path.join(ROOT, "tools"), helpers=helpers(), config=det_config,
                                       weights=weights, margin=MASK_MARGIN))


def test_fpn_matches(det_results):
    assert max(det_results["fpn"]) <= TOLERANCE, det_results["fpn"]


def test_rpn_logits_deltas_and_anchors_match(det_results):
    for part in ("rpn_cls", "rpn_reg", "anchors"):
        assert max(det_results[part]) <= TOLERANCE, (part, det_results[part])


def test_box_and_mask_heads_match_on_given_rois(det_results):
    for part in ("cls_score", "bbox_pred", "mask_pred"):
        assert det_results[part] <= TOLERANCE, (part, det_results[part])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of x1, y1, x2, y2 boxes."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def test_rpn_proposals_match_where_the_algorithms_agree(det_results):
    """Paddle's generate_proposals drops boxes under 1 px even with min_size 0 (mmdet keeps any box of positive
    size): apart from those, both keep the same 1000 proposals, with the same scores."""
    rpn = arrays("det_rpn.npz")
    theirs, their_scores = rpn["proposals"], rpn["proposal_scores"]
    ours = np.array(det_results["proposals"]["boxes"])
    our_scores = 1 / (1 + np.exp(-np.array(det_results["proposals"]["scores"])))  # Paddle keeps logits
    paddle_keeps = (theirs[:, 2:] - theirs[:, :2] >= 1).all(axis=1)
    # a partner has the same box (IoU > 0.999) and, among such (boxes clipped to a corner repeat), the closest score
    same_box = iou_matrix(theirs, ours) > 0.999
    gap = np.where(same_box, np.abs(their_scores[:, None] - our_scores[None, :]), np.inf)
    matched, partner = same_box.any(axis=1), gap.argmin(axis=1)
    assert matched[paddle_keeps].all(), f"{(~matched[paddle_keeps]).sum()} of mmdet's proposals missing"
    assert float(np.abs(ours[partner[matched]] - theirs[matched]).max()) <= 1e-3
    assert float(np.abs(our_scores[partner[matched]] - their_scores[matched]).max()) <= SCORE_TOLERANCE
    extra = np.setdiff1d(np.arange(len(ours)), partner[matched])  # ours beyond their cut, in place of dropped ones
    assert len(extra) <= (~paddle_keeps).sum() and (our_scores[extra] <= their_scores.min() + SCORE_TOLERANCE).all()


def test_end_to_end_boxes_classes_and_masks_match(det_results):
    e2e = arrays("det_end2end.npz")
    bbox, masks, order = by_score(det_results["end2end"])
    assert len(bbox) == len(e2e["boxes"]) > 0, (bbox, e2e["boxes"])
    near = np.array(det_results["end2end"]["near_threshold"], bool)[order]
    np.testing.assert_array_equal(bbox[:, 0].astype(int), e2e["labels"])
    assert float(np.abs(bbox[:, 1] - e2e["scores"]).max()) <= SCORE_TOLERANCE
    assert float(np.abs(bbox[:, 2:] - e2e["boxes"]).max()) <= 1e-3
    assert masks.shape == e2e["masks"].shape == near.shape
    # the same masks, pixel for pixel, except where our pasted probability is within 1e-4 of 0.5 (none here;
    # the fixture's closest pixel is 1.2e-4 away)
    differ = masks != e2e["masks"]
    assert not (differ & ~near).any(), f"{int((differ & ~near).sum())} mask pixels differ away from the threshold"
    print(f"mask pixels differing: {int(differ.sum())}; within {MASK_MARGIN} of the threshold: {int(near.sum())}")
    assert int(near.sum()) <= 5, f"{int(near.sum())} pixels within {MASK_MARGIN} of the mask threshold"


def test_conversion_onto_other_classes_warns_and_drops_the_class_layers(det_config, tmp_path):
    """A detector trained on 3 classes of its own, converted onto a 3-class config: the converter warns that its
    classes are not COCO's 80 in PaddleDetection's order, and drops the class layers (sized for 80, not 3), which
    the report names as left at initialisation; everything else converts."""
    from swin_backbone import read_torch_checkpoint
    from torch_format import save_torch_zip

    checkpoint = read_torch_checkpoint(fixture("det_weights.pth"))
    checkpoint["meta"]["CLASSES"] = ("cat", "dog", "person")
    pth = str(tmp_path / "mask_rcnn_3_classes.pth")
    save_torch_zip(checkpoint, pth)
    config = tmp_path / "mask_rcnn_3_classes.yml"
    config.write_text(f"_BASE_: ['{det_config}']\nnum_classes: 3\n")
    report = convert(pth, str(config), str(tmp_path / "mask_rcnn_3_classes.pdparams"))
    assert "warning: the checkpoint's 3 classes are not COCO's 80 in the category-id order" in report, report
    class_layers = ["roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg", "roi_head.mask_head.conv_logits"]
    dropped = re.search(r"^dropped: 6: (.*)$", report, re.M)
    assert dropped and sorted(dropped.group(1).split(", ")) == sorted(f"{layer}.{leaf}" for layer in class_layers
                                                                       for leaf in ("bias", "weight")), report
    assert "do not fit the model's class count: dropped, they start from scratch" in report, report
    missing = re.search(r"^missing \(left at initialisation\): 6: (.*)$", report, re.M)
    assert missing and sorted(missing.group(1).split(", ")) == sorted(
        f"{layer}.{leaf}" for layer in ("bbox_head.bbox_score", "bbox_head.bbox_delta", "mask_head.mask_fcn_logits")
        for leaf in ("bias", "weight")), report


SEG_PARTS = r"""
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
import swin_backbone.paddleseg
import paddle
from paddleseg.cvlibs import Config, SegBuilder
{helpers}
model = SegBuilder(Config({config!r}, opts=["model.backbone.pretrained=None"])).model
missing = [k for k in model.state_dict() if k not in paddle.load({weights!r})]
model.set_state_dict(paddle.load({weights!r}))
model.eval()
result = {{"missing": missing}}
with paddle.no_grad():
    heads = load("seg_heads.npz")
    feats = [paddle.to_tensor(heads[f"feat{{i}}"]) for i in range(4)]
    result["decode"] = diff(model.decode_head(feats).numpy(), heads["decode_logits"])
    result["aux"] = diff(model.auxiliary_head(feats[model.aux_index]).numpy(), heads["aux_logits"])
    e2e = load("seg_end2end.npz")
    logits = model(paddle.to_tensor(e2e["image"]))[0].numpy()
    result["logits"] = diff(logits[:, e2e["logit_classes"]], e2e["logits"])
    sure = e2e["top2_margin"] >= 1e-4  # none is closer (min 1.5e-4): every label is compared
    result["labels_differ"] = int((logits[0].argmax(0) != e2e["label"])[sure].sum())
print("RESULT", json.dumps(result))
"""


@pytest.fixture(scope="module")
def seg_results(seg_config, tmp_path_factory):
    weights = str(tmp_path_factory.mktemp("mm_seg_weights") / "upernet.pdparams")
    report = convert(fixture("seg_weights.pth"), seg_config, weights)
    assert "a full mmsegmentation segmenter" in report and "all keys matched" in report, report
    return run_script(SEG_PARTS.format(root=ROOT, helpers=helpers(), config=seg_config, weights=weights))


def test_upernet_heads_match(seg_results):
    assert seg_results["missing"] == []
    assert seg_results["decode"] <= TOLERANCE and seg_results["aux"] <= TOLERANCE, seg_results


def test_upernet_whole_image_logits_and_labels_match(seg_results):
    assert seg_results["logits"] <= TOLERANCE, seg_results
    assert seg_results["labels_differ"] == 0, seg_results
