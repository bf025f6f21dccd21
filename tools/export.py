"""Export a Swin model for deployment: one static model for every batch size, height and width.

    python tools/export.py --task cls --model swin_tiny_patch4_window7_224 --weights swin_t.pth --output out/cls
    python tools/export.py --task backbone --model swin_tiny_patch4_window7_224 --weights swin_t.pth --output out/bb
    python tools/export.py --task seg --config seg_configs/upernet_swin_tiny_ade20k_512x512_160k.yml \
        --weights output/best_model/model.pdparams --output out/seg
    python tools/export.py --task det --config det_configs/mask_rcnn_swin_tiny_fpn_1x_coco.yml \
        --weights output/mask_rcnn_swin_tiny_fpn_1x_coco/model_final.pdparams --output out/det
    add --onnx (cls, backbone, seg) to convert with paddle2onnx and check with onnxruntime (pip install .[onnx]).

cls / backbone / seg write the installed Paddle's own inference format -- OUTPUT/model.pdmodel (Paddle 2.x)
or OUTPUT/model.json (Paddle 3.x, PIR) -- + model.pdiparams, with one input `image` of shape [N, 3, H, W]
(any N, H, W; float32, normalised as in training), and OUTPUT/export.json describing them.
Outputs, named in the model file: cls `logits` [N, classes]; backbone `stage<i>` for each of its
out_indices (NCHW feature maps, strides 4, 8, 16, 32); seg `label_map` int32 [N, H, W] (argmax of the
logits at input size).
seg also writes OUTPUT/deploy.yaml for PaddleSeg's deploy client (stock transforms only).
det uses PaddleDetection's own exporter: OUTPUT/model.pdmodel + infer_cfg.yml (its deploy client's), inputs
`image` [N, 3, H, W], `im_shape` [N, 2] (h, w after resize) and `scale_factor` [N, 2] (resize ratios y, x);
outputs `bbox` [M, 6] (class, score, x0, y0, x1, y1), `bbox_num` [N] and `mask` [M, H0, W0].
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.static import InputSpec  # noqa: E402

from swin_backbone import PRESETS, SwinInputError, load_pretrained  # noqa: E402
from swin_backbone.convert import check_fill  # noqa: E402
from swin_backbone.presets import create_model  # noqa: E402
from swin_backbone.runtime import non_negative_int, positive_int, run_tool  # noqa: E402

ONNX_OPSET = 13


class SegmentationLabels(paddle.nn.Layer):
    """[N, 3, H, W] -> int32 [N, H, W] class map (argmax of the model's first logits)."""

    def __init__(self, model: paddle.nn.Layer):
        super().__init__()
        self.model = model

    def forward(self, image: paddle.Tensor) -> paddle.Tensor:
        return paddle.argmax(self.model(image)[0], axis=1).astype("int32")


def build(args: argparse.Namespace) -> paddle.nn.Layer:
    if args.task in ("cls", "backbone"):
        model = create_model(args.model, args.task == "backbone", args.window_size, args.img_size, args.num_classes)
        if args.weights:
            load_pretrained(model, args.weights, strict=args.strict or args.task == "cls")
        return model
    import swin_backbone.paddleseg  # noqa: F401
    from paddleseg.cvlibs import Config, SegBuilder
    from paddleseg.utils import utils

    model = SegBuilder(Config(args.config, opts=["model.backbone.pretrained=None"])).model
    if args.weights:  # checked by our safe reader first: PaddleSeg's loader unpickles without limits
        check_fill(model, args.weights, "--weights", strict=args.strict)
        utils.load_entire_model(model, args.weights)
    return SegmentationLabels(model)


def export_static(model: paddle.nn.Layer, output: str, output_names: Optional[List[str]] = None) -> str:
    """to_static with a fully dynamic [N, 3, H, W] input, then jit.save; returns the path prefix.

    jit.save writes the installed Paddle's format: prefix.pdmodel on Paddle 2.x, prefix.json (PIR) on 3.x.
    """
    model.eval()
    static = paddle.jit.to_static(model, input_spec=[InputSpec([None, 3, None, None], "float32", "image")],
                                  full_graph=True)
    prefix = os.path.join(output, "model")
    for stale in (prefix + ".json", prefix + ".pdmodel"):  # an earlier export under the other Paddle
        if os.path.isfile(stale):
            os.remove(stale)
    paddle.jit.save(static, prefix)
    if output_names:
        name_outputs(prefix, output_names)
    return prefix


def name_outputs(prefix: str, names: List[str]) -> None:
    """Rename the saved model's outputs, in order (jit.save calls them save_infer_model/scale_<i>.tmp_<j> on
    Paddle 2.x and fetch_name_<i> on 3.x, and offers no way to choose)."""
    path = model_file(prefix)
    if path.endswith(".json"):  # PIR: each output is a fetch op whose `name` attribute is the output's name
        with open(path) as handle:
            program = json.load(handle)
        ops = program["program"]["regions"][0]["blocks"][0]["ops"]
        attrs = [{a["N"]: a["AT"] for a in op.get("A", [])} for op in ops if op.get("#", "").endswith(".fetch")]
        attrs.sort(key=lambda a: a["col"]["D"])
        if len(attrs) != len(names):
            raise ValueError(f"{path}: {len(attrs)} outputs, {len(names)} names given ({names})")
        for attr, name in zip(attrs, names):
            attr["name"]["D"] = name
        with open(path, "w") as handle:
            json.dump(program, handle, separators=(",", ":"))
        return
    from paddle.base import core

    with open(path, "rb") as handle:
        desc = core.ProgramDesc(handle.read())
    block = desc.block(0)
    fetches = [block.op(i) for i in range(block.op_size()) if block.op(i).type() == "fetch"]
    fetches.sort(key=lambda op: op.attr("col"))
    if len(fetches) != len(names):
        raise ValueError(f"{path}: {len(fetches)} outputs, {len(names)} names given ({names})")
    for op, name in zip(fetches, names):
        block._rename_var(op.input("X")[0].encode(), name.encode())  # the variable and every op using it
    with open(path, "wb") as handle:
        handle.write(desc.serialize_to_string())


def model_file(prefix: str) -> str:
    """The saved program next to prefix.pdiparams: prefix.json (Paddle 3.x) or prefix.pdmodel (Paddle 2.x)."""
    for suffix in (".json", ".pdmodel"):
        if os.path.isfile(prefix + suffix):
            return prefix + suffix
    raise FileNotFoundError(f"no {prefix}.pdmodel or {prefix}.json")


def output_names(task: str, model: paddle.nn.Layer) -> List[str]:
    if task == "backbone":
        return [f"stage{i}" for i in model.out_indices]
    return {"cls": ["logits"], "seg": ["label_map"]}[task]


def export_onnx(prefix: str, check_shapes: List[tuple]) -> str:
    """Convert with paddle2onnx and run onnxruntime once per shape; returns the .onnx path."""
    try:
        import onnxruntime
        import paddle2onnx
    except ImportError as error:
        raise SystemExit(f"--onnx needs paddle2onnx and onnxruntime (pip install '.[onnx]'): {error}")
    path = prefix + ".onnx"
    # paddle2onnx 1.x reads .pdmodel (Paddle 2.x), 2.x reads the PIR .json of Paddle 3.x
    paddle2onnx.export(model_file(prefix), prefix + ".pdiparams", path, opset_version=ONNX_OPSET,
                       enable_onnx_checker=True)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for shape in check_shapes:
        outputs = session.run(None, {"image": np.random.rand(*shape).astype("float32")})
        print(f"onnxruntime ran {shape}: outputs {[o.shape for o in outputs]}")
    return path


def seg_deploy_config(config: str, program: str) -> Dict:
    """PaddleSeg's deploy.yaml for a seg export: the config's test transforms as stock PaddleSeg 2.8 transforms,
    so that PaddleSeg's own deploy/python/infer.py runs it.

    Our keep-ratio RescaleToFit((long, short)) becomes the stock Resize(target_size, keep_ratio=True): the same
    scale, min(long / max(h, w), short / min(h, w)), and interpolation; it rounds the new size with round()
    (halves to even) where ours rounds halves up, so an image whose scaled side ends in exactly .5 comes out
    one pixel smaller on that side.
    """
    from paddleseg.cvlibs import Config, manager

    transforms = []
    for transform in Config(config).val_dataset_cfg.get("transforms", []):
        transform = dict(transform)
        kind = transform.pop("type")
        if kind == "RescaleToFit":
            scale = transform.pop("scale", (2048, 512))
            kind, transform = "Resize", {"target_size": [max(scale), min(scale)], "keep_ratio": True}
        component = manager.TRANSFORMS.components_dict.get(kind)
        if component is None or not component.__module__.startswith("paddleseg."):
            raise SwinInputError(f"{config}: the test transform {kind} has no stock PaddleSeg equivalent, so "
                                 "PaddleSeg's deploy client could not run this export")
        transforms.append({"type": kind, **transform})
    return {"Deploy": {"model": os.path.basename(program), "params": "model.pdiparams", "transforms": transforms,
                       "input_shape": [None, 3, None, None], "output_op": "argmax", "output_dtype": "int32"}}


def export_det(args: argparse.Namespace) -> Dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from det_common import load_config, load_weights

    overrides = {"weights": args.weights} if args.weights else {}
    cfg = load_config(args.config, overrides)
    from ppdet.engine import Trainer

    trainer = Trainer(cfg, mode="test")
    if args.weights:
        load_weights(trainer, args.weights, strict=args.strict)
    # ppdet calls to_static without full_graph; Paddle 2.6 then traces with SOT, whose result has no
    # main_program for ppdet's exporter. This makes the default the AST (full graph) translator.
    os.environ["ENABLE_FALL_BACK"] = "False"
    # ppdet writes into OUTPUT/<config name>/: export beside, then move the files to OUTPUT itself
    staging = tempfile.mkdtemp(prefix=".export-", dir=args.output)
    try:
        trainer.export(staging)
        written = os.path.join(staging, cfg.filename)
        for name in os.listdir(written):
            os.replace(os.path.join(written, name), os.path.join(args.output, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"task": "det", "inputs": ["image", "im_shape", "scale_factor"], "outputs": ["bbox", "bbox_num", "mask"],
            "config": args.config}


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["cls", "backbone", "seg", "det"], required=True)
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224", choices=sorted(PRESETS),
                        help="preset for cls / backbone")
    parser.add_argument("--config", help="PaddleSeg / PaddleDetection config for seg / det")
    parser.add_argument("--weights", help=".pdparams; for cls / backbone also any checkpoint convert_weights.py "
                                          "reads (authors' .pth, HF / timm folder or safetensors, torchvision, ...)")
    parser.add_argument("--strict", action="store_true", help="fail if --weights leaves any tensor of the model at "
                                                              "initialisation (cls always does)")
    parser.add_argument("--num-classes", type=non_negative_int)
    parser.add_argument("--img-size", type=positive_int)
    parser.add_argument("--window-size", type=positive_int)
    parser.add_argument("--output", required=True)
    parser.add_argument("--onnx", action="store_true",
                        help="cls / backbone / seg: also write model.onnx and check it with onnxruntime")
    args = parser.parse_args(argv)
    if args.task in ("seg", "det") and not args.config:
        parser.error(f"--task {args.task} needs --config")
    if args.onnx and args.task == "det":
        parser.error("--onnx converts the classifier, the backbone and the segmenter; Paddle2ONNX does not convert "
                     "PaddleDetection's R-CNN post-processing: run det exports with Paddle Inference")
    if args.weights and not (os.path.exists(args.weights) or os.path.isfile(args.weights + ".pdparams")):
        raise FileNotFoundError(f"--weights: no file at {args.weights}")
    if not args.weights:
        print("note: no --weights given: exporting randomly initialised weights")
    os.makedirs(args.output, exist_ok=True)
    if args.task == "det":
        info = export_det(args)
    else:
        model = build(args)
        outputs = output_names(args.task, model)
        prefix = export_static(model, args.output, outputs)
        info = {"task": args.task, "inputs": ["image"], "input_shape": [None, 3, None, None], "outputs": outputs,
                "model": args.model if args.task != "seg" else args.config,
                "model_file": os.path.basename(model_file(prefix)), "paddle": paddle.__version__}
        if args.onnx:
            info["onnx"] = export_onnx(prefix, [(1, 3, 97, 131), (2, 3, 224, 224)])
        if args.task == "seg":  # PaddleSeg's deploy client reads this (python deploy/python/infer.py --config)
            import yaml

            with open(os.path.join(args.output, "deploy.yaml"), "w") as handle:
                yaml.safe_dump(seg_deploy_config(args.config, model_file(prefix)), handle, sort_keys=False)
    with open(os.path.join(args.output, "export.json"), "w") as handle:
        json.dump(info, handle, indent=1)
    print(f"exported {args.task} to {args.output}")
    return info


if __name__ == "__main__":
    run_tool(main)
