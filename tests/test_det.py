"""PaddleDetection plug-in: configs build, Swin Mask R-CNN runs at awkward sizes, trains, evaluates, infers."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from synthetic_data import write_coco

pytestmark = pytest.mark.plugins  # PaddleDetection / PaddleSeg: Paddle 2.6 only

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "det_configs", "*.yml")))
TOOLS = os.path.join(ROOT, "tools")

# A config builds in a fresh process: PaddleDetection's config is one global that configs merge into.
BUILD = r"""
import sys, json, numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
from ppdet.core.workspace import create
cfg = det_common.load_config({config!r}, {{}})
model = create(cfg.architecture)
count = sum(int(np.prod(p.shape)) for p in model.parameters())
result = {{"params": count, "backbone": type(model.backbone).__name__}}
# the recipe as PaddleDetection reads it: schedule, optimizer and its no-decay group, readers, test settings
optimizer = create("OptimizerBuilder")(create("LearningRate")(100), model)
names = {{p.name: n for n, p in model.named_parameters()}}
piecewise, warmup = cfg.LearningRate["schedulers"]
train_select = next((t["RandomSelect"] for t in cfg.TrainReader["sample_transforms"] if "RandomSelect" in t), None)
result["recipe"] = {{
    "epoch": cfg.epoch, "base_lr": cfg.LearningRate["base_lr"], "milestones": list(piecewise.milestones),
    "gamma": piecewise.gamma, "warmup": [warmup.steps, warmup.start_factor], "optimizer": type(optimizer).__name__,
    "weight_decay": cfg.OptimizerBuilder["optimizer"]["weight_decay"],
    "betas": [cfg.OptimizerBuilder["optimizer"]["beta1"], cfg.OptimizerBuilder["optimizer"]["beta2"]],
    "no_decay": sorted(names[p.name] for g in optimizer._param_groups if g.get("weight_decay") == 0.0
                       for p in g["params"]),
    "drop_path": cfg.SwinBackbone["drop_path_rate"], "amp": cfg.amp, "batch_per_gpu": cfg.TrainReader["batch_size"],
    "train": train_select, "pad": cfg.TrainReader["batch_transforms"],
    "test_resize": [cfg.EvalReader["sample_transforms"][1], cfg.TestReader["sample_transforms"][1]],
    "test_pad": [cfg.EvalReader["batch_transforms"], cfg.TestReader["batch_transforms"]],
    "rpn_test": cfg.RPNHead["test_proposal"], "rcnn_test": cfg.BBoxPostProcess["nms"],
    "mask_threshold": cfg.MaskPostProcess["binary_thresh"]}}
result["decay_names"] = sorted(n for n, p in model.named_parameters() if n not in result["recipe"]["no_decay"])
if {forward}:
    model.eval()
    h, w = 250, 333
    x = paddle.rand([1, 3, h, w])
    out = model({{"image": x, "im_shape": paddle.to_tensor([[h, w]], "float32"),
                 "scale_factor": paddle.to_tensor([[1.0, 1.0]], "float32")}})
    result["outputs"] = sorted(out.keys())
    result["boxes"] = list(out["bbox"].shape)
    result["masks"] = list(out["mask"].shape)
print("RESULT", json.dumps(result))
"""


def run_python(code: str, timeout: int = 600) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def run_tool(name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(TOOLS, name), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# What the README's table and recipe paragraph say of each config: (epochs, LR steps at epochs, drop path).
RECIPES = {"mask_rcnn_swin_tiny_fpn_1x_coco.yml": (12, [8, 11], 0.1),
           "mask_rcnn_swin_tiny_fpn_3x_coco.yml": (36, [27, 33], 0.2),
           "mask_rcnn_swin_small_fpn_3x_coco.yml": (36, [27, 33], 0.2),
           "mask_rcnn_swin_base_fpn_3x_coco.yml": (36, [27, 33], 0.3)}
SHORT_SIDES = list(range(480, 801, 32))


def check_recipe(config: str, result: dict) -> None:
    """AdamW lr 1e-4 for 16 images per step (2 per GPU on 8), weight decay 0.05 with none on absolute_pos_embed,
    relative_position_bias_table and norms, 500 warmup iterations from 0.001 x lr, steps at the table's epochs;
    multi-scale training (short side 480-800, long side <= 1333, or resize 400-600 + crop 384-600 + resize),
    800x1333 bilinear keep-ratio testing, batches padded to 32, AMP (on GPU); the authors' test settings."""
    recipe = result["recipe"]
    epochs, milestones, drop_path = RECIPES[os.path.basename(config)]
    assert (recipe["epoch"], recipe["milestones"], recipe["gamma"], recipe["drop_path"]) == (
        epochs, milestones, [0.1, 0.01], drop_path), recipe  # x0.1 at each step
    assert (recipe["base_lr"], recipe["batch_per_gpu"] * 8, recipe["warmup"]) == (1e-4, 16, [500, 0.001]), recipe
    assert (recipe["optimizer"], recipe["weight_decay"], recipe["betas"]) == ("AdamW", 0.05, [0.9, 0.999]), recipe
    no_decay = ("absolute_pos_embed", "relative_position_bias_table", "norm")
    assert recipe["no_decay"] and all(any(k in n for k in no_decay) for n in recipe["no_decay"]), recipe["no_decay"]
    assert not [n for n in result["decay_names"] if any(k in n for k in no_decay)], result["decay_names"]
    first, second = recipe["train"]["transforms1"], recipe["train"]["transforms2"]
    assert first == [{"RandomShortSideResize": {"short_side_sizes": SHORT_SIDES, "max_size": 1333}}], first
    assert second == [{"RandomShortSideResize": {"short_side_sizes": [400, 500, 600], "max_size": 1333}},
                      {"RandomSizeCrop": {"min_size": 384, "max_size": 600, "keep_empty": False}},
                      {"RandomShortSideResize": {"short_side_sizes": SHORT_SIDES, "max_size": 1333}}], second
    pad = [{"PadBatch": {"pad_to_stride": 32}}]
    assert recipe["pad"] == pad and recipe["test_pad"] == [pad, pad] and recipe["amp"] is True, recipe
    assert recipe["test_resize"] == [{"Resize": {"interp": 1, "target_size": [800, 1333], "keep_ratio": True}}] * 2
    assert recipe["rpn_test"] == {"min_size": 0.0, "nms_thresh": 0.7, "pre_nms_top_n": 1000, "post_nms_top_n": 1000}
    assert recipe["rcnn_test"] == {"name": "MultiClassNMS", "keep_top_k": 100, "score_threshold": 0.05,
                                   "nms_threshold": 0.5} and recipe["mask_threshold"] == 0.5, recipe


def test_all_configs_present():
    names = {os.path.basename(c) for c in CONFIGS}
    assert {"mask_rcnn_swin_tiny_fpn_1x_coco.yml", "mask_rcnn_swin_tiny_fpn_3x_coco.yml",
            "mask_rcnn_swin_small_fpn_3x_coco.yml", "mask_rcnn_swin_base_fpn_3x_coco.yml",
            "mask_rcnn_swin_smoke.yml"} <= names


@pytest.mark.parametrize("config", [c for c in CONFIGS if "tiny_fpn_1x" not in c], ids=os.path.basename)
def test_config_builds(config):
    result = run_python(BUILD.format(tools=TOOLS, config=config, forward=False))
    assert result["backbone"] == "SwinBackbone"
    documented = re.search(r"Our model: ([\d,]+) parameters", open(config).read())
    if documented:
        assert result["params"] == int(documented.group(1).replace(",", ""))
    if os.path.basename(config) in RECIPES:
        check_recipe(config, result)


def test_swin_tiny_mask_rcnn_parameters_and_odd_size_forward():
    config = os.path.join(ROOT, "det_configs", "mask_rcnn_swin_tiny_fpn_1x_coco.yml")
    result = run_python(BUILD.format(tools=TOOLS, config=config, forward=True))
    assert result["params"] == 47_794_602  # ~48M, the authors' figure
    check_recipe(config, result)
    assert result["boxes"][1] == 6 and result["masks"][0] == result["boxes"][0]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(str(tmp_path_factory.mktemp("coco") / "smoke_coco"))


@pytest.fixture(scope="module")
def coco_to_learn(tmp_path_factory):
    """Enough to learn from in the smoke run (96 steps) and to measure AP on without luck deciding it."""
    return write_coco(str(tmp_path_factory.mktemp("coco") / "learn_coco"), splits=(("train", 16), ("val", 8)))


def smoke_options(coco: str, save_dir: str, *extra: str):
    return ["-c", os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml"), "-o",
            f"TrainDataset.dataset_dir={coco}", f"EvalDataset.dataset_dir={coco}", f"TestDataset.dataset_dir={coco}",
            f"save_dir={save_dir}", *extra]


def losses(log: str):
    return [float(v) for v in re.findall(r"\bloss: ([0-9.]+)", log)]


def ap50(log: str) -> list:
    """The AP at IoU 0.5 over all areas of each COCO summary in a log (bbox, then segm)."""
    return [float(v) for v in re.findall(r"Average Precision  \(AP\) @\[ IoU=0.50      \| area=   all \| "
                                         r"maxDets=100 \] = ([0-9.]+)", log)]


def test_train_eval_infer_resume(coco_to_learn, tmp_path):
    """Seeded smoke training learns: box and mask AP50 on the held-out pictures reach levels an untrained model
    cannot (untrained: 0.000 and 0.000, no detection scores 0.05; trained, seeds 0-7 here: at least 0.379 and
    0.401)."""
    coco, save_dir = coco_to_learn, str(tmp_path / "out")
    # snapshot_epoch 11: checkpoints (and --eval) after epochs 11 and 12 only, to keep the run short
    train = run_tool("det_train.py", "--eval", "--seed", "0", *smoke_options(coco, save_dir, "snapshot_epoch=11"))
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-4000:]
    values = losses(log)
    assert len(values) == 96, log[-3000:]
    first, last = sum(values[:8]) / 8, sum(values[-8:]) / 8
    assert last < 0.8 * first, f"loss did not go down: {values}"
    assert len(ap50(log)) == 4, "--eval: no bbox and segm AP after each of the two snapshots"
    final = os.path.join(save_dir, "mask_rcnn_swin_smoke", "model_final.pdparams")
    assert os.path.isfile(final)

    evaluation = run_tool("det_eval.py", *smoke_options(coco, save_dir, f"weights={final}"))
    log = evaluation.stdout + evaluation.stderr
    assert evaluation.returncode == 0, log[-4000:]
    assert "bbox" in log and "segm" in log and len(re.findall(r"Average Precision", log)) >= 12
    box_ap50, mask_ap50 = ap50(log)
    assert box_ap50 >= 0.25 and mask_ap50 >= 0.25, (box_ap50, mask_ap50)

    picture = os.path.join(coco, "val", "val_000.jpg")
    output = str(tmp_path / "pictures")
    infer = run_tool("det_infer.py", "--image", picture, "--output_dir", output, "--draw_threshold", "0.0",
                     *smoke_options(coco, save_dir, f"weights={final}"))
    assert infer.returncode == 0, (infer.stdout + infer.stderr)[-4000:]
    assert os.path.isfile(os.path.join(output, "val_000.jpg"))

    checkpoint = os.path.join(save_dir, "mask_rcnn_swin_smoke", "10")
    assert os.path.isfile(checkpoint + ".pdparams") and os.path.isfile(checkpoint + ".pdopt")
    resumed = run_tool("det_train.py", "--resume", checkpoint, *smoke_options(coco, str(tmp_path / "again"),
                                                                             "snapshot_epoch=11"))
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert re.search(r"Epoch: \[11\]", log) and not re.search(r"Epoch: \[(\d|10)\]", log)


PRETRAIN = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
from ppdet.engine import Trainer
cfg = det_common.load_config({config!r}, {{"TrainDataset": {{"dataset_dir": {coco!r}}}}})
paddle.seed(11)
source = Trainer(cfg, mode="train").model  # a whole detector, saved as PaddleDetection saves weights
paddle.save(source.state_dict(), {detector!r})
result = {{}}
for kind, path in {files!r}.items():
    paddle.seed(12)
    trainer = Trainer(cfg, mode="train")
    det_common.load_pretrain(trainer, path)
    state = {{k: v.numpy() for k, v in trainer.model.state_dict().items()}}
    qkv = state["backbone.layers.0.blocks.0.attn.qkv.weight"]
    result[kind] = {{"backbone": float(np.abs(qkv - {expected!r}).max()),
                     "backbone_equals_source": bool(np.array_equal(
                         qkv, source.backbone.layers[0].blocks[0].attn.qkv.weight.numpy())),
                     "neck_equals_source": bool(np.array_equal(state["neck.fpn_res2_sum.weight"],
                                                               source.neck.fpn_res2_sum.weight.numpy()))}}
print("RESULT", json.dumps(result))
"""


def test_pretrain_weights_accept_pth_pdparams_and_detector_weights(coco, tmp_path):
    """pretrain_weights may name an authors' .pth or a converted backbone .pdparams (both into the backbone, the
    rest left at initialisation) or full detector weights (the whole model)."""
    from test_convert import authors_layout
    from torch_format import save_torch_zip
    from swin_backbone import SwinTransformer

    import paddle

    paddle.seed(10)
    backbone = SwinTransformer(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
    files = {"authors .pth": str(tmp_path / "backbone.pth"), "backbone .pdparams": str(tmp_path / "backbone.pdparams"),
             "detector .pdparams": str(tmp_path / "detector.pdparams")}
    save_torch_zip({"model": authors_layout(backbone)}, files["authors .pth"])
    paddle.save(backbone.state_dict(), files["backbone .pdparams"])  # what convert_weights.py --backbone writes
    qkv = backbone.layers[0].blocks[0].attn.qkv.weight.numpy()
    result = run_python(PRETRAIN.format(tools=TOOLS, config=os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml"),
                                        coco=coco, detector=files["detector .pdparams"], files=files,
                                        expected=qkv.tolist()))
    backbone_only = {"backbone": 0.0, "backbone_equals_source": False, "neck_equals_source": False}
    assert result["authors .pth"] == result["backbone .pdparams"] == backbone_only, result
    # the whole detector: its own backbone (not the one above) and its neck
    assert result["detector .pdparams"]["backbone_equals_source"] and result["detector .pdparams"][
        "neck_equals_source"], result


def test_missing_dataset_is_explained(tmp_path):
    proc = run_tool("det_train.py", *smoke_options(str(tmp_path / "nowhere"), str(tmp_path)))
    assert proc.returncode != 0
    assert "annotations/instances_train.json" in proc.stderr and "COCO layout" in proc.stderr


def test_tools_use_every_core_or_threads():
    """The detection tools give Paddle every core, or --threads N."""
    code = f"""
import json, sys
sys.path.insert(0, {TOOLS!r})
import det_common, paddle
from swin_backbone.runtime import available_cores
calls = []
paddle.base.core.set_num_threads = calls.append
config = {os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml")!r}
for argv in (["-c", config, "--threads", "1"], ["-c", config]):
    det_common.prepare(det_common.arg_parser("threads").parse_args(argv))
print("RESULT", json.dumps({{"calls": calls, "cores": available_cores()}}))
"""
    result = run_python(code)
    assert result["calls"] == [1, result["cores"]]


def test_registration_is_idempotent_and_sets_flag():
    code = """
import importlib, json, paddle
import swin_backbone.ppdet as plugin
importlib.reload(plugin)
import swin_backbone.ppdet
from ppdet.core.workspace import global_config
print("RESULT", json.dumps({"flag": paddle.get_flags(["FLAGS_set_to_1d"])["FLAGS_set_to_1d"],
                            "registered": "SwinBackbone" in global_config,
                            "theirs": "SwinTransformer" in global_config}))
"""
    result = run_python(code)
    assert result == {"flag": True, "registered": True, "theirs": True}


def test_seed_repeats_a_run(coco, tmp_path):
    """--seed fixes initialisation, data order and augmentation: two runs log the same losses."""
    runs = [run_tool("det_train.py", "--seed", "3", *smoke_options(coco, str(tmp_path / f"run{i}"), "epoch=1"))
            for i in range(2)]
    for run in runs:
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    first, second = (losses(run.stdout + run.stderr) for run in runs)
    assert len(first) == 4 and first == second, (first, second)
