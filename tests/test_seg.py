"""PaddleSeg plug-in: configs build, UperNet sizes and parameters, train/eval/predict/resume end to end."""
import glob
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT
from synthetic_data import write_ade20k

import swin_backbone.paddleseg as seg_plugin  # noqa: E402

pytestmark = pytest.mark.plugins  # PaddleDetection / PaddleSeg: Paddle 2.6 only

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "seg_configs", "*.yml")))
TOOLS = os.path.join(ROOT, "tools")
SMOKE = os.path.join(ROOT, "seg_configs", "upernet_swin_smoke.yml")


def build(config: str, **kwargs):
    from paddleseg.cvlibs import Config, SegBuilder

    return SegBuilder(Config(config, **kwargs)).model


def trainable(model) -> int:
    return sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable)


def test_all_configs_present():
    names = {os.path.basename(c) for c in CONFIGS}
    assert {"upernet_swin_tiny_ade20k_512x512_160k.yml", "upernet_swin_small_ade20k_512x512_160k.yml",
            "upernet_swin_base_ade20k_512x512_160k.yml", "upernet_swin_smoke.yml"} <= names


def check_recipe(cfg, builder) -> None:
    """The README's recipe: AdamW lr 6e-5 for 16 images per step (2 per GPU on 8), betas (0.9, 0.999), weight
    decay 0.01 (none on position embedding, bias tables and the backbone's norms), 1500 warmup iterations from
    1e-6 x lr, then poly decay to 0 over 160k iterations; drop path 0.3; resize into 2048x512 x 0.5-2.0,
    photometric distortion, 512x512 crop (no class above 75%), flip; test at short side 512, whole image;
    UperNet pooling 1/2/3/6 to 512 channels, dropout 0.1, FCN auxiliary head on stage 3 with loss weight 0.4."""
    model, optimizer = builder.model, builder.optimizer
    schedule = optimizer._learning_rate
    assert type(optimizer).__name__ == "AdamW" and (optimizer._beta1, optimizer._beta2) == (0.9, 0.999)
    assert (schedule.warmup_steps, schedule.start_lr, schedule.end_lr) == (1500, pytest.approx(6e-11), 6e-5)
    poly = schedule.learning_rate
    assert (type(poly).__name__, poly.base_lr, poly.end_lr, poly.power) == ("PolynomialDecay", 6e-5, 0.0, 1.0)
    assert poly.decay_steps + schedule.warmup_steps == cfg.iters == 160_000 and cfg.batch_size * 8 == 16
    names = {p.name: n for n, p in model.named_parameters()}
    decay = {names[p.name]: g.get("weight_decay") for g in optimizer._param_groups for p in g["params"]}
    undecayed = ("absolute_pos_embed", "relative_position_bias_table")
    expected = {n: 0.0 if (n.startswith("backbone.") and ".norm" in n) or any(k in n for k in undecayed) else 0.01
                for n, p in model.named_parameters() if not p.stop_gradient}
    assert decay == expected and 0.0 in decay.values()
    rates = [block.drop_path.drop_prob for stage in model.backbone.layers for block in stage.blocks]
    assert rates[-1] == pytest.approx(0.3), rates  # drop path 0.3, reached linearly by the last block
    kinds = [(t["type"], {k: v for k, v in t.items() if k in ("scale", "ratio_range", "crop_size", "category_max_ratio")})
             for t in cfg.train_dataset_cfg["transforms"]]
    assert kinds == [("RandomRescaleToFit", {"scale": [2048, 512], "ratio_range": [0.5, 2.0]}), ("RandomDistort", {}),
                     ("Normalize", {}), ("RandomPaddingCrop", {"crop_size": [512, 512], "category_max_ratio": 0.75}),
                     ("RandomHorizontalFlip", {})], kinds
    assert [(t["type"], t.get("scale")) for t in cfg.val_dataset_cfg["transforms"]] == [
        ("RescaleToFit", [2048, 512]), ("Normalize", None)] and not cfg.test_config.get("is_slide")
    head = model.decode_head
    assert head.pool_scales == [1, 2, 3, 6] and head.conv_seg._in_channels == 512 and head.dropout.p == 0.1
    assert model.aux_index == 2 and builder.loss["coef"] == [1.0, 0.4] and not model.align_corners


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_config_builds_with_documented_parameters(config):
    from paddleseg.cvlibs import Config, SegBuilder

    # The released backbone files are not here: build without them.
    cfg = Config(config, opts=["model.backbone.pretrained=None"])
    builder = SegBuilder(cfg)
    model = builder.model
    assert type(model).__name__ == "SwinUperNet" and type(model.backbone).__name__ == "SwinBackbone"
    documented = re.search(r"Our model: ([\d,]+) parameters", open(config).read())
    if documented:
        assert trainable(model) == int(documented.group(1).replace(",", ""))
    if "smoke" not in config:
        check_recipe(cfg, builder)


def test_upernet_swin_tiny_size_and_shapes():
    model = build(CONFIGS[[os.path.basename(c) for c in CONFIGS].index("upernet_swin_tiny_ade20k_512x512_160k.yml")],
                  opts=["model.backbone.pretrained=None"])
    assert abs(trainable(model) - 60e6) / 60e6 < 0.01
    model.eval()
    with paddle.no_grad():
        for height, width in ((512, 512), (333, 250)):
            logits = model(paddle.rand([1, 3, height, width]))
            assert len(logits) == 1 and logits[0].shape == [1, 150, height, width]
    model.train()
    main, aux = model(paddle.rand([1, 3, 96, 128]))
    assert main.shape == aux.shape == [1, 150, 96, 128]


def test_training_reaches_every_parameter():
    """A training step of the smoke UperNet gives every parameter a gradient, the backbone's included (the smoke
    run's mIoU alone cannot show it: with the backbone's features detached, its heads still reach 0.64)."""
    model = build(SMOKE, opts=["model.backbone.pretrained=None"])
    model.train()
    main, aux = model(paddle.rand([2, 3, 96, 128]))
    label = paddle.randint(0, 150, [2, 96, 128])
    (paddle.nn.functional.cross_entropy(main, label, axis=1) + 0.4 * paddle.nn.functional.cross_entropy(
        aux, label, axis=1)).backward()
    no_grad = [n for n, p in model.named_parameters() if not p.stop_gradient and (
        p.grad is None or not float(p.grad.abs().sum()) > 0)]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_backbone_pretrained_takes_authors_pth_or_pdparams(tmp_path):
    from test_convert import authors_layout
    from torch_format import save_torch_zip

    source = seg_plugin.SwinBackbone(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
    pth, pdparams = str(tmp_path / "backbone.pth"), str(tmp_path / "backbone.pdparams")
    save_torch_zip({"model": authors_layout(source)}, pth)
    paddle.save(source.state_dict(), pdparams)
    for path in (pth, pdparams):
        loaded = seg_plugin.SwinBackbone(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), pretrained=path)
        for name, value in source.state_dict().items():
            np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value.numpy(), err_msg=f"{path}: {name}")
    assert loaded.feat_channels == [16, 32, 64, 128]


def rescaled_sizes(heights: np.ndarray, widths: np.ndarray, long_side: int = 2048, short_side: int = 512):
    """(ours, PaddleSeg's Resize(keep_ratio)) output sizes (h, w) as formulas: the same scale, halves rounded up
    (the authors' rounding) or to even (Python's round)."""
    scale = np.minimum(long_side / np.maximum(heights, widths), short_side / np.minimum(heights, widths))
    ours = np.floor(heights * scale + 0.5), np.floor(widths * scale + 0.5)
    theirs = np.round(heights * scale), np.round(widths * scale)
    return ours, theirs


def test_deploy_resize_rounds_halves_to_even_where_ours_rounds_up():
    """The README: deploy.yaml's stock Resize(keep_ratio) scales as our RescaleToFit does but rounds halves to
    even, so 448 of the 3.2 million sizes from 16 to 2560 px (h <= w) come out one pixel smaller on a side, e.g.
    1024x1025 -> 512x512 instead of 512x513. The formulas are checked against the real transforms on sizes
    where they differ and where they agree."""
    sys.path.insert(0, TOOLS)
    import export
    from paddleseg.cvlibs import Config, manager

    config = os.path.join(ROOT, "seg_configs", "upernet_swin_tiny_ade20k_512x512_160k.yml")
    (ours_cfg,) = [dict(t) for t in Config(config).val_dataset_cfg["transforms"] if t["type"] == "RescaleToFit"]
    (resize,) = [dict(t) for t in export.seg_deploy_config(config, "model.pdmodel")["Deploy"]["transforms"]
                 if t["type"] == "Resize"]
    ours = manager.TRANSFORMS[ours_cfg.pop("type")](**ours_cfg)
    theirs = manager.TRANSFORMS[resize.pop("type")](**resize)
    assert type(theirs).__module__.startswith("paddleseg.") and type(ours) is seg_plugin.RescaleToFit

    sides = np.arange(16, 2561, dtype=np.float64)
    heights, widths = (a.ravel() for a in np.meshgrid(sides, sides, indexing="ij"))
    keep = heights <= widths
    heights, widths = heights[keep], widths[keep]
    (our_h, our_w), (their_h, their_w) = rescaled_sizes(heights, widths)
    differ = (our_h != their_h) | (our_w != their_w)
    assert len(heights) == 3_239_785 and int(differ.sum()) == 448
    rng = np.random.default_rng(0)
    picks = list(np.flatnonzero(differ)[[0, 1, -2, -1]]) + list(rng.choice(np.flatnonzero(~differ), 6, replace=False))
    for index in [int(np.flatnonzero((heights == 1024) & (widths == 1025))[0])] + picks:
        image = np.zeros((int(heights[index]), int(widths[index]), 3), np.uint8)
        got = [transform({"img": image, "trans_info": [], "gt_fields": []})["img"].shape[:2]
               for transform in (ours, theirs)]
        assert got == [(our_h[index], our_w[index]), (their_h[index], their_w[index])], (image.shape, got)
    (our_h, our_w), (their_h, their_w) = rescaled_sizes(np.array([1024.0]), np.array([1025.0]))
    assert (our_h[0], our_w[0], their_h[0], their_w[0]) == (512, 513, 512, 512)


def test_calculate_area_matches_counting():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, (2, 1, 9, 7))
    label = rng.integers(0, 5, (2, 1, 9, 7))
    label[0, 0, :2] = 255
    intersect, pred_area, label_area = seg_plugin.calculate_area(paddle.to_tensor(pred), paddle.to_tensor(label), 5)
    valid = label != 255
    for c in range(5):
        assert int(pred_area[c]) == int(((pred == c) & valid).sum())
        assert int(label_area[c]) == int((label == c).sum())
        assert int(intersect[c]) == int(((pred == c) & (label == c)).sum())


def area_counts(pred, label, num_classes=5):
    return [a.numpy().tolist() for a in seg_plugin.calculate_area(paddle.to_tensor(np.array(pred, "int64")),
                                                                  paddle.to_tensor(np.array(label, "int64")),
                                                                  num_classes)]


def test_calculate_area_always_gives_num_classes_counts():
    # no pixel predicted correctly (the repro of the evaluation crash): intersect was [0] long
    assert area_counts([[[[1, 1, 1, 1]]]], [[[[0, 0, 2, 255]]]]) == [[0] * 5, [0, 3, 0, 0, 0], [2, 0, 1, 0, 0]]
    # every label pixel ignored: all three were empty
    assert area_counts([[[[1, 2, 3]]]], [[[[255, 255, 255]]]]) == [[0] * 5] * 3
    # an empty prediction (no pixels at all)
    assert area_counts(np.zeros((1, 1, 0, 4)), np.zeros((1, 1, 0, 4))) == [[0] * 5] * 3


def test_present_classes_miou():
    areas = {"intersect": np.array([5, 0, 2, 0]), "pred": np.array([5, 1, 4, 0]), "label": np.array([5, 2, 2, 0])}
    miou, present = seg_plugin.present_classes_miou(areas)
    assert present == 3 and abs(miou - (1.0 + 0.0 + 0.5) / 3) < 1e-9


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    return os.path.join(write_ade20k(str(tmp_path_factory.mktemp("ade"))), "ADEChallengeData2016")


def run_tool(name, *args, timeout=900):
    return subprocess.run([sys.executable, os.path.join(TOOLS, name), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def data_opts(root):
    return ["--opts", f"train_dataset.dataset_root={root}", f"val_dataset.dataset_root={root}"]


PRESENT_MIOU = r"\[EVAL\] mIoU over the 3 of 150 classes present in the labels: ([0-9.]+)"


def test_train_eval_predict_resume(ade, tmp_path):
    """Seeded smoke training learns: the mIoU over the 3 classes present in the held-out labels reaches a level
    an untrained model cannot (untrained: 0.00, predicting none of them; one class everywhere: at most ~0.2;
    trained: 0.72; the heads alone, on detached backbone features: 0.64)."""
    save_dir = str(tmp_path / "out")
    train = run_tool("seg_train.py", "--config", SMOKE, "--do_eval", "--seed", "0", "--save_dir", save_dir,
                     "--save_interval", "15", "--log_iters", "3", *data_opts(ade))
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-4000:]
    losses = [float(v) for v in re.findall(r"\[TRAIN\].*?loss: ([0-9.]+)", log)]
    assert len(losses) == 10 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses
    assert len(re.findall(r"\[EVAL\] #Images: 3 mIoU: [0-9.]+", log)) == 2
    after_15, after_30 = (float(v) for v in re.findall(PRESENT_MIOU, log))
    assert after_30 >= 0.5, (after_15, after_30)
    weights = os.path.join(save_dir, "best_model", "model.pdparams")
    assert os.path.isfile(weights) and os.path.isdir(os.path.join(save_dir, "iter_15"))

    evaluation = run_tool("seg_eval.py", "--config", SMOKE, "--model_path", weights, "--aug_eval", "--scales", "0.75",
                          "1.0", "--flip_horizontal", *data_opts(ade))
    log = evaluation.stdout + evaluation.stderr
    assert evaluation.returncode == 0, log[-4000:]
    assert re.search(r"\[EVAL\] #Images: 3 mIoU: [0-9.]+", log)
    assert float(re.search(PRESENT_MIOU, log).group(1)) >= 0.5  # the best model, multi-scale and flipped

    output = str(tmp_path / "pictures")
    predict = run_tool("seg_predict.py", "--config", SMOKE, "--model_path", weights, "--image_path",
                       os.path.join(ade, "images", "validation"), "--save_dir", output, *data_opts(ade))
    assert predict.returncode == 0, (predict.stdout + predict.stderr)[-4000:]
    assert len(os.listdir(os.path.join(output, "pseudo_color_prediction"))) == 3
    assert len(os.listdir(os.path.join(output, "added_prediction"))) == 3

    resumed = run_tool("seg_train.py", "--config", SMOKE, "--save_dir", save_dir, "--resume_model",
                       os.path.join(save_dir, "iter_15"), "--log_iters", "3", *data_opts(ade))
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    iters = [int(v) for v in re.findall(r"iter: (\d+)/30", log)]
    assert iters and min(iters) == 18 and max(iters) == 30


def test_missing_dataset_is_explained(tmp_path):
    proc = run_tool("seg_train.py", "--config", SMOKE, *data_opts(str(tmp_path / "nowhere")))
    assert proc.returncode != 0
    assert "images/training" in proc.stderr and "ADEChallengeData2016 layout" in proc.stderr


def test_tools_use_every_core_or_threads(monkeypatch):
    """The segmentation tools give Paddle every core, or --threads N."""
    sys.path.insert(0, TOOLS)
    import seg_common

    from swin_backbone.runtime import available_cores

    calls = []
    monkeypatch.setattr(paddle.base.core, "set_num_threads", calls.append)
    for argv in (["--config", SMOKE, "--threads", "1"], ["--config", SMOKE]):
        seg_common.setup(seg_common.arg_parser("threads").parse_args(argv))
    assert calls == [1, available_cores()]


def test_both_plugins_in_one_process_and_twice():
    code = """
import importlib, swin_backbone.paddleseg as seg, swin_backbone.ppdet as det
importlib.reload(seg); importlib.reload(det)
from paddleseg.cvlibs import manager
from ppdet.core.workspace import global_config
assert "SwinBackbone" in manager.BACKBONES.components_dict and "SwinUperNet" in manager.MODELS.components_dict
assert "SwinBackbone" in global_config
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_seed_repeats_a_run(ade, tmp_path):
    runs = [run_tool("seg_train.py", "--config", SMOKE, "--seed", "3", "--iters", "4", "--log_iters", "1",
                     "--save_dir", str(tmp_path / f"run{i}"), *data_opts(ade)) for i in range(2)]
    for run in runs:
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    first, second = (re.findall(r"\[TRAIN\].*?loss: ([0-9.]+)", run.stdout + run.stderr) for run in runs)
    assert len(first) == 4 and first == second, (first, second)


def test_paddle_imported_first_reads_ade20k_labels(ade):
    # The first lines of PaddleSeg's own scripts: paddle's core is then the first to load libz.so.1, which
    # without the plug-in's repair fails every PNG label ("codec configuration error") in the loader thread.
    code = f"""
import paddle
import swin_backbone.paddleseg
from swin_backbone import _load_order
import io
import numpy as np
from PIL import Image
from paddleseg.datasets import ADE20K
import paddleseg.transforms as T
dataset = ADE20K(transforms=[T.Normalize()], dataset_root={ade!r}, mode="train")
labels = [batch["label"].numpy() for batch in paddle.io.DataLoader(dataset, batch_size=2)]
assert len(labels) == 4 and set(np.unique(np.concatenate([l.ravel() for l in labels]))) <= {{0, 1, 2, 3, 255}}
buffer = io.BytesIO()
Image.fromarray(labels[0][0].astype(np.uint8)).save(buffer, "PNG")
assert np.array_equal(np.asarray(Image.open(buffer)), labels[0][0])
print(_load_order.ZLIB_STATUS)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("repaired"), proc.stdout


PADDLE_FIRST = r"""
import paddle  # first, as PaddleSeg's own scripts begin: paddle's core then loads libz.so.1 first
import swin_backbone.paddleseg
import sys
sys.path.insert(0, {tools!r})
import seg_eval, seg_train
from swin_backbone import _load_order
seg_train.main({train!r})
seg_eval.main({evaluate!r})
print("ZLIB", _load_order.ZLIB_STATUS)
"""


def test_training_and_evaluation_with_paddle_imported_first_and_another_class_count(ade, tmp_path):
    """A 3-class ADE20K-layout set (PNG labels) trains and evaluates a 3-class model in a process that imported
    paddle before the plug-in; evaluation names what its mIoU averages."""
    save_dir = str(tmp_path / "out")
    data = data_opts(ade)
    train = ["--config", SMOKE, "--num_classes", "3", "--seed", "0", "--iters", "6", "--save_interval", "6",
             "--log_iters", "3", "--do_eval", "--save_dir", save_dir, *data]
    evaluate = ["--config", SMOKE, "--num_classes", "3", "--model_path",
                os.path.join(save_dir, "best_model", "model.pdparams"), *data]
    proc = subprocess.run([sys.executable, "-c", PADDLE_FIRST.format(tools=TOOLS, train=train, evaluate=evaluate)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "ZLIB repaired" in log and "num_classes: 3" in log
    assert len(re.findall(r"\[TRAIN\].*?loss: [0-9.]+", log)) == 2
    during, after = re.findall(r"\[EVAL\] mIoU over the (\d) of 3 classes present in the labels: [0-9.]+ \(the mIoU "
                               r"above averages all 3", log)
    assert during == after == "3", log[-3000:]
