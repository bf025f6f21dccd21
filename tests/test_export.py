"""Export once with a dynamic [N, 3, H, W] input; Paddle Inference and onnxruntime match eager at any size."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, small_exportable_models

sys.path.insert(0, os.path.join(ROOT, "tools"))
import export  # noqa: E402
import infer  # noqa: E402


SIZES = [(1, 97, 131), (2, 203, 517), (3, 64, 64)]  # three batch sizes, odd heights and widths
NAMES = {"backbone": ["stage0", "stage1", "stage2", "stage3"], "cls": ["logits"]}


def exported(model: paddle.nn.Layer, folder: str, task: str) -> paddle.nn.Layer:
    """Export `model` to `folder`; returns an eager twin with the same weights (to_static converts in place)."""
    twin = type(model)(**model.init_args)
    twin.set_state_dict(model.state_dict())
    twin.eval()
    export.export_static(model, folder, export.output_names(task, model))
    return twin


def eager(model, x: np.ndarray):
    with paddle.no_grad():
        out = model(paddle.to_tensor(x))
    return [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    paddle.seed(3)
    return {name: (exported(model, str(root / name), name), str(root / name))
            for name, model in small_exportable_models().items()}


@pytest.mark.parametrize("name", ["backbone", "cls"])
def test_paddle_inference_matches_eager_at_any_size(models, name):
    twin, folder = models[name]
    predictor = infer.Predictor(folder)
    assert predictor.predictor.get_input_names() == ["image"]
    assert predictor.predictor.get_output_names() == NAMES[name]
    for batch, height, width in SIZES:
        x = np.random.rand(batch, 3, height, width).astype("float32")
        got, want = predictor(x), eager(twin, x)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            assert float(np.abs(g - w).max()) <= 1e-4


@pytest.mark.parametrize("name", ["backbone", "cls"])
def test_default_inference_config_matches_eager(models, name):
    """Paddle Inference as PaddleDetection's and PaddleSeg's clients run it: a plain Config, so on CPU oneDNN for
    every op it has a kernel for and all its fuse passes."""
    import paddle.inference as inference

    twin, folder = models[name]
    config = inference.Config(*infer.model_files(folder))
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    for batch, height, width in SIZES:
        x = np.random.rand(batch, 3, height, width).astype("float32")
        handle = predictor.get_input_handle("image")
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        predictor.run()  # failed with "could not reshape a memory descriptor" when the mask was built with where()
        got = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
        for g, w in zip(got, eager(twin, x)):
            assert g.shape == w.shape and float(np.abs(g - w).max()) <= 1e-4


def matmul_adds(model_file: str) -> list:
    """(rank of the matmul output, rank of the addend) for every add applied to a matmul's output in an exported
    program: a .pdmodel (Paddle 2.x, protobuf) or a model.json (Paddle 3.x, PIR)."""
    if model_file.endswith(".json"):
        with open(model_file) as handle:
            ops = json.load(handle)["program"]["regions"][0]["blocks"][0]["ops"]
        rank, made_by = {}, {}
        for op in ops:
            outs = op.get("O", [])
            for out in outs if isinstance(outs, list) else [outs]:  # a parameter ("p") has one, not a list
                if "TT" in out:
                    rank[out["%"]] = len(out["TT"]["D"][1])
                made_by[out["%"]] = op.get("#", "").split(".", 1)[-1]
        return [(rank[x["%"]], rank.get(y["%"], 0)) for op in ops if op.get("#") == "1.add"
                for x, y in [op["I"]] if made_by.get(x["%"]) == "matmul"]
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc()
    with open(model_file, "rb") as handle:
        program.ParseFromString(handle.read())
    block = program.blocks[0]
    rank = {v.name: len(v.type.lod_tensor.tensor.dims) for v in block.vars}
    made_by = {name: op.type for op in block.ops for o in op.outputs for name in o.arguments}
    pairs = []
    for op in block.ops:
        if op.type == "elementwise_add":
            (x,), (y,) = [[a for i in op.inputs if i.parameter == p for a in i.arguments] for p in ("X", "Y")]
            if made_by.get(x) in ("matmul_v2", "matmul"):
                pairs.append((rank[x], rank[y]))
    return pairs


def test_no_matmul_add_with_lower_rank_bias(models):
    """oneDNN fuses matmul + add; with an addend of lower rank ([nH, N, N] on [B_, nH, N, N]) the fused kernel is
    ~100x slower than the two ops. The static graph must not offer that pattern (a Linear's 1-D bias is fine)."""
    pairs = matmul_adds(infer.model_files(models["backbone"][1])[0])
    assert pairs and not [(x, y) for x, y in pairs if 1 < y < x], pairs


@pytest.mark.parametrize("name", ["backbone", "cls"])
def test_onnx_matches_eager(models, name):
    import onnxruntime  # the onnx extra: installed by the README test command and .ci/run
    twin, folder = models[name]
    path = export.export_onnx(os.path.join(folder, "model"), [(1, 3, 64, 64)])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == NAMES[name]
    for batch, height, width in SIZES:
        x = np.random.rand(batch, 3, height, width).astype("float32")
        for g, w in zip(session.run(None, {"image": x}), eager(twin, x)):
            assert float(np.abs(g - w).max()) <= 1e-4


def test_errors_are_clear(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pdmodel .* or model.json"):
        infer.Predictor(str(tmp_path))
    if paddle.__version__.startswith("2."):  # Paddle 3's PIR model.json: Paddle 2 says so instead of crashing
        (tmp_path / "model.json").write_text("{}")
        (tmp_path / "model.pdiparams").write_bytes(b"")
        with pytest.raises(FileNotFoundError, match="exported by Paddle 3"):
            infer.Predictor(str(tmp_path))
    predictor = infer.Predictor(models["backbone"][1])
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        predictor(np.zeros((3, 64, 64), "float32"))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        predictor(np.zeros((1, 4, 64, 64), "float32"))


def run_tool(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=900)


def test_cli_classifier_export_and_infer(tmp_path):
    out = str(tmp_path / "cls")
    proc = run_tool("export.py", "--task", "cls", "--model", "swin_tiny_patch2_window4_32", "--num-classes", "10",
                    "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(os.path.join(out, "export.json")))["inputs"] == ["image"]
    proc = run_tool("infer.py", "--model-dir", out, "--size", "33x47", "--batch", "3", "--repeats", "1")
    assert proc.returncode == 0 and "[[3, 10]]" in proc.stdout, proc.stderr[-3000:]


SHIFTED_SEG = """_base_: '{base}'
model:
  backbone:
    depths: [2, 2, 2, 2]  # two blocks a stage: shifted windows, whose mask broke the default predictor
    num_heads: [1, 2, 2, 4]
"""


@pytest.mark.plugins
def test_segmentation_export_runs_in_paddleseg_deploy_setup(tmp_path):
    """The UperNet export with its deploy.yaml: PaddleSeg's own DeployConfig reads it and builds its stock
    transforms, and a default-config predictor gives eager's labels at two odd sizes and two batch sizes; the
    same graph up to the logits gives eager's logits within 1e-4."""
    import cv2
    import paddle.inference as inference
    import swin_backbone.paddleseg  # noqa: F401
    from paddleseg.cvlibs import Config, SegBuilder
    from paddleseg.deploy.infer import DeployConfig

    config = tmp_path / "upernet_shifted.yml"
    config.write_text(SHIFTED_SEG.format(base=os.path.join(ROOT, "seg_configs", "upernet_swin_smoke.yml")))
    paddle.seed(5)
    model = SegBuilder(Config(str(config), opts=["model.backbone.pretrained=None"])).model
    model.eval()
    weights = str(tmp_path / "upernet.pdparams")
    paddle.save(model.state_dict(), weights)
    out = str(tmp_path / "seg")
    proc = run_tool("export.py", "--task", "seg", "--config", str(config), "--weights", weights, "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]

    deploy = DeployConfig(os.path.join(out, "deploy.yaml"))  # what PaddleSeg's deploy/python/infer.py does
    kinds = [type(t).__name__ for t in deploy.transforms.transforms]
    assert kinds == ["Resize", "Normalize"] and all(type(t).__module__.startswith("paddleseg.")
                                                    for t in deploy.transforms.transforms)
    predictor = inference.create_predictor(inference.Config(deploy.model, deploy.params))  # default config
    assert predictor.get_output_names() == ["label_map"]
    rng = np.random.default_rng(0)
    inputs = []
    for batch, (height, width) in ((1, (97, 131)), (2, (120, 203))):
        images = []
        for i in range(batch):
            path = str(tmp_path / f"picture{i}.jpg")
            cv2.imwrite(path, rng.integers(0, 255, (height, width, 3)).astype(np.uint8))
            images.append(deploy.transforms({"img": path})["img"])
        x = np.stack(images)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        predictor.run()
        labels = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        with paddle.no_grad():
            logits = model(paddle.to_tensor(x))[0].numpy()
        inputs.append((x, logits))
        top2 = np.sort(logits, axis=1)[:, -2:]
        sure = top2[:, 1] - top2[:, 0] > 1e-4  # pixels where float rounding cannot swap the two best classes
        assert labels.shape == logits.argmax(1).shape and labels.dtype == np.int32
        assert (labels == logits.argmax(1))[sure].all() and sure.mean() > 0.99

    # the logits the label map is the argmax of: the same model through the same exporter, without the argmax,
    # at the sizes above and at odd ones with a third batch size
    for shape in ((3, 3, 61, 89),):
        x = rng.normal(size=shape).astype("float32")
        with paddle.no_grad():
            inputs.append((x, model(paddle.to_tensor(x))[0].numpy()))
    logits_dir = str(tmp_path / "seg_logits")
    export.export_static(model, logits_dir)
    predictor = inference.create_predictor(inference.Config(*infer.model_files(logits_dir)))
    for x, eager_logits in inputs:
        handle = predictor.get_input_handle("image")
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        predictor.run()
        logits = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        assert logits.shape == eager_logits.shape
        diff = float(np.abs(logits - eager_logits).max())
        print(f"seg logits {list(x.shape)}: max abs diff {diff:.1e}")
        assert diff <= 1e-4, diff


SHIFTED_DET = """_BASE_: ['{base}']
SwinBackbone:
  depths: [2, 2, 2, 2]  # shifted windows
  num_heads: [1, 2, 2, 4]
BBoxPostProcess:
  decode: RCNNBox
  nms:
    name: MultiClassNMS
    keep_top_k: 100
    score_threshold: 0.0  # random weights: keep every box, to compare many
    nms_threshold: 0.5
"""

DET_EAGER = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tools!r})
import det_common
import paddle
from ppdet.core.workspace import create
paddle.seed(7)
cfg = det_common.load_config({config!r}, {{}})
model = create(cfg.architecture)
model.eval()
paddle.save(model.state_dict(), {weights!r})
results = {{}}
for name, path in {images!r}.items():
    x = np.load(path)
    batch, _, h, w = x.shape
    with paddle.no_grad():
        out = model({{"image": paddle.to_tensor(x), "im_shape": paddle.to_tensor([[h, w]] * batch, "float32"),
                     "scale_factor": paddle.to_tensor([[1.0, 1.0]] * batch, "float32")}})
    results[name + "_bbox"], results[name + "_num"] = out["bbox"].numpy(), out["bbox_num"].numpy()
    results[name + "_mask"] = out["mask"].numpy()
np.savez({result!r}, **results)
"""

# batch, height, width: odd sizes (the backbone pads to 32 inside the graph) and two batch sizes
DET_SIZES = {"b1_203x311": (1, 203, 311), "b2_250x333": (2, 250, 333)}


def per_image(bbox: np.ndarray, bbox_num: np.ndarray, masks: np.ndarray):
    """[(boxes, masks)] per image, each sorted by class, then score (highest first)."""
    images, start = [], 0
    for count in bbox_num:
        boxes, pasted = bbox[start:start + count], masks[start:start + count]
        order = np.lexsort((-boxes[:, 1], boxes[:, 0]))
        images.append((boxes[order], pasted[order]))
        start += count
    return images


@pytest.mark.plugins
def test_detection_export_runs_in_default_predictor(tmp_path):
    """The Mask R-CNN export under a default-config predictor (as PaddleDetection's client runs it) gives
    eager's classes, scores (1e-4), boxes (1e-3 px) and masks, at odd sizes and two batch sizes."""
    config = tmp_path / "mask_rcnn_shifted.yml"
    config.write_text(SHIFTED_DET.format(base=os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml")))
    weights, result = str(tmp_path / "det.pdparams"), str(tmp_path / "eager.npz")
    rng = np.random.default_rng(1)
    images = {}
    for name, (batch, height, width) in DET_SIZES.items():
        images[name] = str(tmp_path / f"{name}.npy")
        np.save(images[name], rng.normal(size=(batch, 3, height, width)).astype("float32"))
    proc = subprocess.run([sys.executable, "-c", DET_EAGER.format(tools=os.path.join(ROOT, "tools"), config=str(config),
                                                                   weights=weights, images=images, result=result)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = str(tmp_path / "det")
    proc = run_tool("export.py", "--task", "det", "--config", str(config), "--weights", weights, "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(os.path.join(out, "export.json")))["inputs"] == ["image", "im_shape", "scale_factor"]
    assert os.path.isfile(os.path.join(out, "infer_cfg.yml"))  # what PaddleDetection's deploy client reads
    predictor = infer.Predictor(out)
    assert sorted(predictor.predictor.get_input_names()) == ["im_shape", "image", "scale_factor"]
    eager = np.load(result)
    for name, (batch, height, width) in DET_SIZES.items():
        bbox, bbox_num, masks = predictor(np.load(images[name]))
        np.testing.assert_array_equal(bbox_num, eager[name + "_num"], err_msg=name)
        assert len(bbox_num) == batch and min(bbox_num) > 10 and masks.shape[1:] == (height, width), name
        got, want = per_image(bbox, bbox_num, masks), per_image(eager[name + "_bbox"], bbox_num, eager[name + "_mask"])
        for (boxes, pasted), (eager_boxes, eager_pasted) in zip(got, want):
            np.testing.assert_array_equal(boxes[:, 0], eager_boxes[:, 0], err_msg=name)
            score_diff, box_diff = (float(np.abs(boxes[:, s] - eager_boxes[:, s]).max()) for s in (1, slice(2, 6)))
            print(f"{name}: scores {score_diff:.1e}, boxes {box_diff:.1e} px, mask pixels differing "
                  f"{(pasted != eager_pasted).mean():.1e}")
            assert score_diff <= 1e-4 and box_diff <= 1e-3, (name, score_diff, box_diff)
            assert (pasted != eager_pasted).mean() < 1e-3, name


def test_infer_uses_every_core_or_threads(models, monkeypatch):
    """Paddle Inference gets every core unless --threads (Predictor's threads) says otherwise."""
    import paddle.inference as inference

    from swin_backbone.runtime import available_cores

    seen = []

    class Config(inference.Config):
        def set_cpu_math_library_num_threads(self, threads):
            seen.append(threads)
            super().set_cpu_math_library_num_threads(threads)

    monkeypatch.setattr(inference, "Config", Config)
    folder = models["cls"][1]
    infer.Predictor(folder, threads=1)
    infer.Predictor(folder)
    infer.main(["--model-dir", folder, "--size", "33x47", "--repeats", "1", "--threads", "1"])
    assert seen == [1, available_cores(), 1]


def test_infer_switches_are_checked(tmp_path):
    proc = run_tool("infer.py", "--model-dir", str(tmp_path), "--trt", "fp16")
    assert proc.returncode == 2 and "--trt needs --gpu" in proc.stderr
    proc = run_tool("infer.py", "--model-dir", str(tmp_path), "--gpu", "--trt-sizes", "64x64:32x32:128x128")
    assert proc.returncode == 2 and "MIN <= OPT <= MAX" in proc.stderr
    shapes = infer.trt_shape_ranges(["image", "im_shape", "scale_factor"], ((32, 32), (224, 224), (800, 1333)), 2)
    assert shapes[0]["image"] == [1, 3, 32, 32] and shapes[1]["image"] == [2, 3, 800, 1333]
    assert shapes[2]["image"] == [1, 3, 224, 224] and shapes[1]["im_shape"] == [2, 2]
    if not paddle.is_compiled_with_cuda():  # a CPU build says so in one line
        proc = run_tool("infer.py", "--model-dir", str(tmp_path), "--gpu")
        assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == \
            "error: --gpu: this Paddle has no CUDA (install paddlepaddle-gpu)"
