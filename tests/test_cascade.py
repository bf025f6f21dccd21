"""Cascade Mask R-CNN plug-in: the configs build the authors' models, the heads learn, the smoke model trains,
evaluates, infers and exports for PaddleDetection's deploy predictor, and the converter finds the cascade configs.

The numbers against mmdetection's own code are in test_cascade_parity.py.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from synthetic_data import write_coco

pytestmark = pytest.mark.plugins  # PaddleDetection: Paddle 2.6 only

TOOLS = os.path.join(ROOT, "tools")
CONFIGS = os.path.join(ROOT, "det_configs")
SMOKE = os.path.join(CONFIGS, "cascade_mask_rcnn_swin_smoke.yml")
# The authors' models as mmdetection 2.28 builds them from their configs (counted in the fixtures' venv).
AUTHORS_PARAMETERS = {"tiny_fpn_1x": 85_629_804, "tiny_fpn_3x": 85_629_804, "small_fpn_3x": 106_947_708,
                      "base_fpn_3x": 144_977_002}
BN_STATISTICS = 3 * 4 * 2 * 256  # running mean and variance of 4 BatchNorms of 256 channels in each of 3 stages


def run_python(code: str, timeout: int = 900) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def run_tool(name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(TOOLS, name), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# The four configs in one process: they set the same keys, so each load leaves exactly its own values.
BUILD = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
from ppdet.core.workspace import create
result = {{}}
for name in {names!r}:
    cfg = det_common.load_config({configs!r} + "/cascade_mask_rcnn_swin_" + name + "_coco.yml", {{}})
    model = create(cfg.architecture)
    params = model.parameters()
    entry = {{"total": sum(int(np.prod(p.shape)) for p in params),
              "trainable": sum(int(np.prod(p.shape)) for p in params if not p.stop_gradient),
              "architecture": cfg.architecture, "norm_type": cfg.norm_type,
              "drop_path": cfg.SwinBackbone["drop_path_rate"], "epoch": cfg.epoch}}
    if name == "tiny_fpn_1x":
        no_decay = cfg.OptimizerBuilder["optimizer"]["param_groups"][0]["params"]
        names = [n for n, p in model.named_parameters() if not p.stop_gradient]
        entry["no_decay_outside_backbone"] = [n for n in names if any(k in n for k in no_decay)
                                              and not n.startswith("backbone.")]
        entry["no_decay_in_backbone"] = sum(1 for n in names if any(k in n for k in no_decay))
        entry["head_batch_norms"] = sum(isinstance(l, paddle.nn.BatchNorm2D) for l in model.bbox_head.sublayers())
        converted = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what the trainer does on several GPUs
        entry["sync_batch_norms"] = sum(isinstance(l, paddle.nn.SyncBatchNorm) for l in converted.sublayers())
    result[name] = entry
    del model
print("RESULT", json.dumps(result))
"""


def test_configs_build_the_authors_models():
    """Parameter counts equal the authors' (Paddle also counts the BatchNorm statistics); SyncBN as PaddleDetection
    configures it (BatchNorm layers that its trainer converts on several GPUs); decay excluded where theirs is."""
    result = run_python(BUILD.format(tools=TOOLS, configs=CONFIGS, names=list(AUTHORS_PARAMETERS)))
    for name, authors in AUTHORS_PARAMETERS.items():
        entry = result[name]
        assert entry["architecture"] == "CascadeRCNN" and entry["norm_type"] == "sync_bn", entry
        assert entry["trainable"] == authors and entry["total"] == authors + BN_STATISTICS, (name, entry)
        documented = re.search(r"Our model: ([\d,]+) parameters", open(
            os.path.join(CONFIGS, f"cascade_mask_rcnn_swin_{name}_coco.yml")).read())
        assert int(documented.group(1).replace(",", "")) == entry["total"], name
    assert [result[n]["drop_path"] for n in AUTHORS_PARAMETERS] == [0.0, 0.2, 0.2, 0.3]
    assert [result[n]["epoch"] for n in AUTHORS_PARAMETERS] == [12, 36, 36, 36]
    tiny = result["tiny_fpn_1x"]
    # the authors' paramwise_cfg matches 'norm' by substring: the backbone's LayerNorms, not the heads' BatchNorms
    assert tiny["no_decay_outside_backbone"] == [] and tiny["no_decay_in_backbone"] > 0
    assert tiny["head_batch_norms"] == 12 and tiny["sync_batch_norms"] == 12


def test_sampler_keeps_the_quota_in_candidate_order():
    """More candidates than the quota: 128 positives at most, 512 in all, positives then negatives, each group in
    candidate order, the ground truth first (mmdet's RandomSampler with add_gt_as_proposals)."""
    import swin_backbone.ppdet  # noqa: F401  (registers the heads; sets FLAGS_set_to_1d)
    import paddle
    from swin_backbone.ppdet_cascade import box_iou, sample_rois

    rng = np.random.default_rng(0)
    gt = np.array([[10, 10, 60, 80], [100, 40, 180, 120], [30, 150, 90, 190]], np.float32)
    jitter = rng.uniform(-0.25, 0.25, (600, 4)) * 60
    proposals = np.concatenate([gt[rng.integers(0, 3, 600)] + jitter, rng.uniform(0, 200, (1400, 2)).repeat(2, 1)
                                + np.concatenate([np.zeros((1400, 2)), rng.uniform(5, 60, (1400, 2))], 1)])
    samples = sample_rois(paddle.to_tensor(proposals.astype("float32")), paddle.to_tensor(gt),
                          paddle.to_tensor([3, 7, 1], "int32"), paddle.arange(3), 0.6, 512, 0.25, 80)
    labels = samples.labels.numpy()
    positives = int((labels < 80).sum())
    assert positives == 128 and len(labels) == 512 and (labels[:positives] < 80).all()
    iou = box_iou(paddle.to_tensor(gt), samples.rois).numpy().max(0)
    assert (iou[:positives] >= 0.6).all() and (iou[positives:] < 0.6).all()
    # the ground truth is drawn like any positive; those drawn come first, matched to themselves
    is_gt, matched = samples.is_gt.numpy(), samples.gt_index.numpy()[:positives]
    drawn = int(is_gt.sum())
    assert is_gt[:drawn].all() and not is_gt[drawn:].any()
    np.testing.assert_array_equal(samples.rois.numpy()[:drawn], gt[matched[:drawn]])
    np.testing.assert_array_equal(samples.targets.numpy()[:positives], gt[matched])
    np.testing.assert_array_equal(labels[:positives], np.array([3, 7, 1])[matched])


# The box and mask heads alone on one batch (the oracle's training inputs: fixed FPN features, proposals and ground
# truth), trained on the samples every stage drew in the first step: each of the nine losses falls, so gradients
# reach every part of every stage (GIoU through the stage's decode, cross entropy, the mask loss). How the samples
# themselves are drawn is proven against mmdetection in test_cascade_parity.py.
FIXED_BATCH = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
from ppdet.core.workspace import create
paddle.seed(0)
cfg = det_common.load_config({config!r}, {{}})
model = create(cfg.architecture)
box_head, mask_head = model.bbox_head, model.mask_head
with np.load({train!r}) as npz:
    train = {{k: npz[k] for k in npz.files}}
t = paddle.to_tensor
{training_inputs}
box_head.train()
mask_head.train()


def losses_on(samples):
    rois, rois_num, targets = samples
    losses = {{}}
    for stage, head in enumerate(box_head.stages):
        labels, boxes, _ = targets[stage]
        scores, deltas = head(box_head.roi_extractor(feats, rois[stage], rois_num[stage]))
        losses[f"cls{{stage}}"], losses[f"reg{{stage}}"] = box_head.stage_losses(
            stage, scores, deltas, paddle.concat(rois[stage]), paddle.concat(labels), paddle.concat(boxes))
    masks = mask_head(feats, rois, rois_num, inputs, targets)
    losses.update({{f"mask{{s}}": masks[f"loss_mask_stage{{s}}"] for s in range(3)}})
    return losses


box_head(feats, proposals, t([len(p) for p in proposals], "int32"), inputs)
samples = box_head.get_assigned_rois() + (box_head.get_assigned_targets(),)
optimizer = paddle.optimizer.AdamW(learning_rate={lr}, weight_decay=0.05,
                                   parameters=box_head.parameters() + mask_head.parameters())
history = []
for step in range({steps}):
    losses = losses_on(samples)
    history.append({{k: float(v) for k, v in losses.items()}})
    paddle.add_n(list(losses.values())).backward()
    optimizer.step()
    optimizer.clear_grad()
print("RESULT", json.dumps(history))
"""


def test_every_stage_learns_on_a_fixed_batch(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_cascade_parity import TRAINING_INPUTS, fixture, reference_config

    config = tmp_path / "cascade_80.yml"
    config.write_text(reference_config(SMOKE))
    history = run_python(FIXED_BATCH.format(tools=TOOLS, config=str(config), train=fixture("cascade_train.npz"),
                                            training_inputs=TRAINING_INPUTS, lr=5e-3, steps=30))
    before, after = history[0], history[-1]
    assert len(before) == 9
    for name in before:
        assert after[name] < 0.7 * before[name], (name, [round(h[name], 4) for h in history])


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """16 training pictures, so that seeds (and CPUs) cannot decide whether the smoke run learns; 8 held out."""
    return write_coco(str(tmp_path_factory.mktemp("cascade_coco") / "smoke_coco"), splits=(("train", 16), ("val", 8)))


def smoke_options(coco: str, save_dir: str, *extra: str):
    return ["-c", SMOKE, "-o", f"TrainDataset.dataset_dir={coco}", f"EvalDataset.dataset_dir={coco}",
            f"TestDataset.dataset_dir={coco}", f"save_dir={save_dir}", *extra]


def stage_losses(log: str, name: str):
    return [float(v) for v in re.findall(rf"\b{name}: ([0-9.]+)", log)]


def average_precisions(log: str):
    """(box AP, mask AP) at IoU 0.50:0.95, all areas, as pycocotools prints them (bbox first)."""
    return [float(v) for v in re.findall(r"Average Precision.*IoU=0.50:0.95 \| area=   all.*= ([0-9.]+)", log)]


@pytest.fixture(scope="module")
def trained(coco, tmp_path_factory):
    """The smoke config trained on the synthetic set (12 epochs of 8 iterations, seeded), then evaluated."""
    save_dir = str(tmp_path_factory.mktemp("cascade_out"))
    train = run_tool("det_train.py", "--seed", "0", *smoke_options(coco, save_dir, "snapshot_epoch=12"))
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-4000:]
    weights = os.path.join(save_dir, "cascade_mask_rcnn_swin_smoke", "model_final.pdparams")
    assert os.path.isfile(weights)
    evaluation = run_tool("det_eval.py", *smoke_options(coco, save_dir, f"weights={weights}"))
    assert evaluation.returncode == 0, (evaluation.stdout + evaluation.stderr)[-4000:]
    return {"log": log, "weights": weights, "eval": evaluation.stdout + evaluation.stderr, "save_dir": save_dir}


def test_smoke_training_detects(trained):
    """An untrained cascade scores every class ~1/81 < 0.05, so it detects nothing (box and mask AP 0.000,
    measured with three seeds); trained, the smoke model finds the squares and discs (seeds 0-7 here: box and
    mask AP at least 0.128 and 0.168)."""
    box_ap, mask_ap = average_precisions(trained["eval"])
    assert box_ap >= 0.05 and mask_ap >= 0.05, (box_ap, mask_ap)


def test_all_three_stages_losses_fall(trained):
    """Classification and mask losses of every stage fall; the box losses are averaged over all samples, so they
    grow while the RPN starts finding objects: each stage's total falls."""
    log = trained["log"]
    for stage in range(3):
        parts = {kind: stage_losses(log, f"loss_{kind}_stage{stage}") for kind in ("bbox_cls", "bbox_reg", "mask")}
        assert all(len(v) == 96 for v in parts.values()), {k: len(v) for k, v in parts.items()}
        start = {k: np.mean(v[:8]) for k, v in parts.items()}
        end = {k: np.mean(v[-16:]) for k, v in parts.items()}
        assert end["bbox_cls"] < 0.6 * start["bbox_cls"] and end["mask"] < 0.6 * start["mask"], (stage, start, end)
        assert sum(end.values()) < 0.8 * sum(start.values()), (stage, start, end)


def box_iou_xywh(a, b) -> float:
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    overlap = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return overlap / (aw * ah + bw * bh - overlap)


def test_det_infer_finds_the_objects(trained, coco, tmp_path):
    """det_infer.py draws the picture and saves boxes and masks; its best box is one of the picture's objects."""
    output = str(tmp_path / "pictures")
    infer = run_tool("det_infer.py", "--image", os.path.join(coco, "val", "val_000.jpg"), "--output_dir", output,
                     "--save_results", *smoke_options(coco, trained["save_dir"], f"weights={trained['weights']}"))
    assert infer.returncode == 0, (infer.stdout + infer.stderr)[-4000:]
    assert os.path.isfile(os.path.join(output, "val_000.jpg"))
    boxes = json.load(open(os.path.join(output, "bbox.json")))
    masks = json.load(open(os.path.join(output, "mask.json")))
    assert len(boxes) == len(masks) > 0
    best = max(boxes, key=lambda d: d["score"])
    truth = [a for a in json.load(open(os.path.join(coco, "annotations", "instances_val.json")))["annotations"]
             if a["image_id"] == 1]
    assert any(a["category_id"] == best["category_id"] and box_iou_xywh(a["bbox"], best["bbox"]) >= 0.5
               for a in truth), (best, truth)


# Eager detections, and the export's under a predictor configured as PaddleDetection 2.6's deploy/python/infer.py
# configures it on CPU (load_predictor: Config, disable_gpu, threads, memory optimisation, no feed/fetch ops).
EAGER_AND_EXPORTED = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
import paddle.inference as inference
from ppdet.core.workspace import create
cfg = det_common.load_config({config!r}, {{}})
model = create(cfg.architecture)
model.set_state_dict(paddle.load({weights!r}))
model.eval()
config = inference.Config({model_dir!r} + "/model.pdmodel", {model_dir!r} + "/model.pdiparams")
config.disable_gpu()
config.set_cpu_math_library_num_threads(2)
config.disable_glog_info()
config.enable_memory_optim()
config.switch_use_feed_fetch_ops(False)
predictor = inference.create_predictor(config)
images = np.load({images!r})
result = {{}}
for batch in (1, 2):
    feeds = {{"image": images[:batch], "im_shape": np.tile(np.array([[180, 234]], "float32"), (batch, 1)),
              "scale_factor": np.tile(np.array([[0.9, 0.9]], "float32"), (batch, 1))}}
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        handle.reshape(list(feeds[name].shape))
        handle.copy_from_cpu(feeds[name])
    predictor.run()
    bbox, num, mask = (predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names())
    with paddle.no_grad():
        eager = model({{k: paddle.to_tensor(v) for k, v in feeds.items()}})
    result[batch] = {{"num": num.tolist(), "eager_num": eager["bbox_num"].numpy().tolist(),
                      "labels_equal": bool((bbox[:, 0] == eager["bbox"].numpy()[:, 0]).all()),
                      "score": float(np.abs(bbox[:, 1] - eager["bbox"].numpy()[:, 1]).max()),
                      "box": float(np.abs(bbox[:, 2:] - eager["bbox"].numpy()[:, 2:]).max()),
                      "mask_pixels": float((mask != eager["mask"].numpy()).mean()),
                      "mask_shape": list(mask.shape)}}
print("RESULT", json.dumps(result))
"""


def test_export_runs_in_deploy_predictor_and_matches_eager(trained, coco, tmp_path):
    """export.py --task det writes PaddleDetection's infer_cfg.yml for a CascadeRCNN; the exported graph gives
    eager's boxes, classes, scores and masks at batch 1 and 2 (PaddleDetection's own cascade exports batch 1)."""
    import cv2

    out = str(tmp_path / "det")
    proc = run_tool("export.py", "--task", "det", "--config", SMOKE, "--weights", trained["weights"], "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    infer_cfg = open(os.path.join(out, "infer_cfg.yml")).read()
    assert re.search(r"^arch: RCNN$", infer_cfg, re.M) and re.search(r"^mask: true$", infer_cfg, re.M), infer_cfg
    assert "PadStride" in infer_cfg, infer_cfg  # the deploy client runs every RCNN arch this way
    # two validation pictures resized by 0.9 to 180x234, normalised and padded to 192x256 as the client does
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    images = np.zeros((2, 3, 192, 256), "float32")
    for i in range(2):
        picture = cv2.imread(os.path.join(coco, "val", f"val_00{i}.jpg"))[:, :, ::-1]
        picture = cv2.resize(picture, (234, 180), interpolation=cv2.INTER_LINEAR) / 255.0
        images[i, :, :180, :234] = ((picture - mean) / std).transpose(2, 0, 1)
    np.save(str(tmp_path / "images.npy"), images)
    result = run_python(EAGER_AND_EXPORTED.format(tools=TOOLS, config=SMOKE, weights=trained["weights"],
                                                  model_dir=out, images=str(tmp_path / "images.npy")))
    for batch, got in result.items():
        assert got["num"] == got["eager_num"] and got["labels_equal"], (batch, got)
        assert got["score"] <= 1e-4 and got["box"] <= 1e-3 and got["mask_pixels"] < 1e-3, (batch, got)
        assert got["num"][-1] >= 5 and got["mask_shape"][1:] == [200, 260], (batch, got)  # untrained: no box


def test_converter_recognises_the_cascade_configs():
    """From the backbone: Swin-T -> the 1x config (the 3x one builds the same network), Swin-S, Swin-B."""
    sys.path.insert(0, TOOLS)
    sys.path.insert(0, os.path.dirname(__file__))
    import convert_weights
    from test_convert import fake_swin_keys

    cascade = {"roi_head.bbox_head.0.shared_convs.0.conv.weight": np.zeros(1, np.float32),
               "roi_head.bbox_head.2.fc_cls.weight": np.zeros(1, np.float32)}
    for (embed, depths, heads), config in [((96, (2, 2, 6, 2), (3, 6, 12, 24)), "tiny_fpn_1x"),
                                           ((96, (2, 2, 18, 2), (3, 6, 12, 24)), "small_fpn_3x"),
                                           ((128, (2, 2, 18, 2), (4, 8, 16, 32)), "base_fpn_3x")]:
        weights = {**fake_swin_keys(embed, depths, heads, prefix="backbone."), **cascade}
        found = convert_weights.recognise_config(weights, "detector", "x")
        assert found.endswith(f"cascade_mask_rcnn_swin_{config}_coco.yml"), found


def test_converter_refuses_a_config_of_the_other_detector():
    from swin_backbone.convert import read_checkpoint
    from swin_backbone.convert_mm import convert_mmdet
    from swin_backbone.errors import CheckpointKeyError

    cascade = read_checkpoint(os.path.join(FIXTURES, "mm_cascade_reference", "cascade_weights.pth"))[1]
    with pytest.raises(CheckpointKeyError, match="is a 3-stage Cascade Mask R-CNN, the config builds a Mask R-CNN"):
        convert_mmdet(cascade, {"bbox_head.head.fc6.weight": (1568, 64)}, "cascade.pth")
    mask_rcnn = read_checkpoint(os.path.join(FIXTURES, "mm_reference", "det_weights.pth"))[1]
    with pytest.raises(CheckpointKeyError, match="is a Mask R-CNN, the config builds a Cascade Mask R-CNN"):
        convert_mmdet(mask_rcnn, {"bbox_head.stages.0.fc.weight": (784, 64)}, "mask_rcnn.pth")


def test_each_box_gets_its_images_shape():
    """per_box_image_shape, written without repeat_interleave (OpenVINO lacks it), repeats each image's shape once
    per box of that image, images without boxes included."""
    import paddle
    from swin_backbone.ppdet_cascade import per_box_image_shape

    im_shape = paddle.to_tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]])
    rois_num = paddle.to_tensor([2, 0, 3, 1], "int32")
    expected = np.repeat(im_shape.numpy(), [2, 0, 3, 1], axis=0)
    np.testing.assert_array_equal(per_box_image_shape(im_shape, rois_num).numpy(), expected)
