"""Convert Swin checkpoints (the authors', Hugging Face, timm, torchvision, mmpretrain) to Paddle .pdparams.

    # a classifier or backbone checkpoint onto a preset (recognised from the weights when --model is left out);
    # IN is a file (.pth, .bin, .safetensors, .pdparams) or a Hugging Face / timm model folder (config.json + weights)
    python tools/convert_weights.py swin_tiny_patch4_window7_224.pth swin_t.pdparams [--model PRESET] [--backbone]
        [--window-size 12 --img-size 384] [--num-classes 10] [--strict]
    python tools/convert_weights.py microsoft/swin-tiny-patch4-window7-224/ swin_t.pdparams   # a downloaded HF folder
    # a whole mmdetection (Cascade) Mask R-CNN or mmsegmentation UperNet onto our configs (recognised when --config
    # is left out)
    python tools/convert_weights.py mask_rcnn_swin_tiny_patch4_window7_1x.pth mask_rcnn_swin_t.pdparams \
        [--config det_configs/mask_rcnn_swin_tiny_fpn_1x_coco.yml]
    python tools/convert_weights.py cascade_mask_rcnn_swin_small_patch4_window7.pth cascade_swin_s.pdparams \
        [--config det_configs/cascade_mask_rcnn_swin_small_fpn_3x_coco.yml]
    python tools/convert_weights.py upernet_swin_tiny_patch4_window7_512x512.pth upernet_swin_t.pdparams \
        [--config seg_configs/upernet_swin_tiny_ade20k_512x512_160k.yml]

Its first line names the source (library, format, what the file holds); then the target (a preset, or the
arguments the checkpoint implies when no preset fits), and what was copied, converted, dropped (and why) and
left at initialisation. A conversion that matches nothing writes nothing.
"""
import argparse
import os
import sys
from typing import Dict, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402

from swin_backbone import PRESETS, SwinClassifier, SwinTransformer  # noqa: E402
from swin_backbone.convert import KINDS, backbone_part, convert_source, read_source  # noqa: E402
from swin_backbone.convert_sources import architecture  # noqa: E402
from swin_backbone.convert_mm import (COCO_CLASSES, backbone_architecture, cascade_stages,  # noqa: E402
                                      convert_mmdet, convert_mmseg)
from swin_backbone.errors import CheckpointKeyError, SwinInputError  # noqa: E402
from swin_backbone.presets import create_model  # noqa: E402
from swin_backbone.runtime import non_negative_int, positive_int, run_tool  # noqa: E402

# The configs whose backbone a whole checkpoint's backbone (embed_dim, depths) matches.
DET_CONFIGS = {(96, (2, 2, 6, 2)): "det_configs/mask_rcnn_swin_tiny_fpn_1x_coco.yml",
               (96, (2, 2, 18, 2)): "det_configs/mask_rcnn_swin_small_fpn_3x_coco.yml",
               (128, (2, 2, 18, 2)): "det_configs/mask_rcnn_swin_base_fpn_3x_coco.yml"}
# Swin-T's 1x and 3x cascades build the same network (they differ in drop path and schedule only), so weights cannot
# tell them apart: the 1x config is taken, as for Mask R-CNN; either evaluates a checkpoint alike.
CASCADE_CONFIGS = {(96, (2, 2, 6, 2)): "det_configs/cascade_mask_rcnn_swin_tiny_fpn_1x_coco.yml",
                   (96, (2, 2, 18, 2)): "det_configs/cascade_mask_rcnn_swin_small_fpn_3x_coco.yml",
                   (128, (2, 2, 18, 2)): "det_configs/cascade_mask_rcnn_swin_base_fpn_3x_coco.yml"}
SEG_CONFIGS = {(96, (2, 2, 6, 2)): "seg_configs/upernet_swin_tiny_ade20k_512x512_160k.yml",
               (96, (2, 2, 18, 2)): "seg_configs/upernet_swin_small_ade20k_512x512_160k.yml",
               (128, (2, 2, 18, 2)): "seg_configs/upernet_swin_base_ade20k_512x512_160k.yml"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="a checkpoint file (.pth, .bin, .safetensors, .pdparams) or a Hugging Face / "
                                      "timm model folder; the authors', HF, timm, torchvision or mmpretrain layout")
    parser.add_argument("output", help="where to write the .pdparams")
    parser.add_argument("--model", choices=sorted(PRESETS),
                        help="preset the weights are for (default: recognised from the weights)")
    parser.add_argument("--backbone", action="store_true",
                        help="convert for the multi-scale backbone (drops the classifier's head and final norm)")
    parser.add_argument("--config", help="a det_configs/ or seg_configs/ file: convert a whole mmdetection Mask "
                                         "R-CNN or mmsegmentation UperNet onto it (default: recognised)")
    parser.add_argument("--window-size", type=positive_int, help="target window size (bias tables are resized)")
    parser.add_argument("--img-size", type=positive_int,
                        help="target image size (absolute position embedding is resized)")
    parser.add_argument("--num-classes", type=non_negative_int,
                        help="target classes (default: the checkpoint's; a head of another size is dropped, an "
                             "ImageNet-22K head onto 1000 classes is mapped with the authors' class map)")
    parser.add_argument("--strict", action="store_true", help="fail on missing or unexpected keys")
    args = parser.parse_args(argv)
    if args.config and (args.model or args.backbone or args.window_size or args.img_size or args.num_classes):
        parser.error("--config converts a whole detector or segmenter: leave out --model, --backbone, "
                     "--window-size, --img-size and --num-classes (set them in the config)")
    return args


def recognise_preset(weights: Dict[str, np.ndarray], origin: str) -> str:
    """The preset whose architecture the (backbone) weights have."""
    arch = architecture(backbone_part(weights)[0], origin=origin)
    preset, _ = implied_target(arch)
    if preset is None:
        raise SwinInputError(f"{origin}: no preset has this architecture ({arch}): give --model and the overrides "
                             "(--window-size, --img-size)")
    return preset


def implied_target(arch: Dict[str, object]) -> Tuple[Optional[str], Dict[str, object]]:
    """(the preset of the same family -- embed_dim, depths, heads, patch -- preferring the same window and image
    size, or None; the arguments the checkpoint implies that the preset does not have)."""
    family = [name for name, p in PRESETS.items()
              if (p["embed_dim"], list(p["depths"]), list(p["num_heads"]), p["patch_size"]) ==
              (arch["embed_dim"], arch["depths"], arch["num_heads"], arch["patch_size"])]
    exact = [name for name in family if (PRESETS[name]["window_size"], PRESETS[name]["img_size"]) ==
             (arch["window_size"], arch["img_size"])]
    if not family:
        return None, {}
    preset = (exact or family)[0]
    overrides = {key: arch[key] for key in ("window_size", "img_size") if PRESETS[preset][key] != arch[key]}
    return preset, overrides


def build_target(found, args: argparse.Namespace):
    """(our model for the converted weights, how the report names it): --model, or the checkpoint's preset,
    or -- when no preset has its architecture -- a model with the arguments the checkpoint implies."""
    backbone_weights = backbone_part(found.weights)[0]
    arch = architecture(backbone_weights, found.file.config, args.input) if not args.model else None
    classes = args.num_classes
    if classes is None and arch and arch["num_classes"]:
        classes = arch["num_classes"]
    if args.model:
        return (create_model(args.model, args.backbone, args.window_size, args.img_size, classes),
                args.model + (" backbone" if args.backbone else ""))
    preset, implied = implied_target(arch)
    window, img_size = args.window_size or implied.get("window_size"), args.img_size or implied.get("img_size")
    extra = {"ape": True} if arch["ape"] else {}
    if arch.get("mlp_ratio", 4.0) != 4.0:
        extra["mlp_ratio"] = arch["mlp_ratio"]
    if not arch["qkv_bias"]:
        extra["qkv_bias"] = False
    if preset is not None and not extra:
        said = ", ".join(f"{k} {v}" for k, v in (("window_size", window), ("img_size", img_size)) if v)
        name = preset + (" backbone" if args.backbone else "") + (f" with {said}" if said else "")
        return create_model(preset, args.backbone, window, img_size, classes), name
    kwargs = {k: arch[k] for k in ("embed_dim", "depths", "num_heads", "patch_size", "in_chans")}
    kwargs.update(extra, window_size=window or arch["window_size"])
    size = img_size or arch["img_size"]
    if args.backbone:
        model = SwinTransformer(**kwargs, pretrain_img_size=size)
    else:
        kwargs.update(img_size=size, num_classes=1000 if classes is None else classes)
        model = SwinClassifier(**kwargs)
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return model, (f"{type(model).__name__}({shown}) -- no preset has this architecture, so the arguments are the "
                   "ones the checkpoint implies")


def recognise_config(weights: Dict[str, np.ndarray], kind: str, origin: str) -> str:
    """The det_configs/ or seg_configs/ file whose backbone a whole checkpoint has."""
    arch = backbone_architecture(weights, origin)
    table = SEG_CONFIGS if kind != "detector" else CASCADE_CONFIGS if cascade_stages(weights) else DET_CONFIGS
    config = table.get((arch["embed_dim"], tuple(arch["depths"])))
    if config is None:
        raise SwinInputError(f"no config in {os.path.dirname(next(iter(table.values())))}/ has this backbone "
                             f"({arch}): give --config")
    return os.path.join(ROOT, config)


def config_task(config: str) -> str:
    """'det' for a PaddleDetection config (`_BASE_`, `architecture`), 'seg' for a PaddleSeg one."""
    if not os.path.isfile(config):
        raise FileNotFoundError(f"--config: no file at {config}")
    text = open(config, encoding="utf-8").read()
    if "_BASE_:" in text or "architecture:" in text:
        return "det"
    if "_base_:" in text or "model:" in text:
        return "seg"
    raise SwinInputError(f"{config}: neither a PaddleDetection nor a PaddleSeg config")


def build_config_model(config: str, task: str):
    """The PaddleDetection or PaddleSeg model a config builds (no pretrained weights loaded)."""
    if task == "det":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from det_common import load_config
        from ppdet.core.workspace import create

        return create(load_config(config, {}).architecture)
    import swin_backbone.paddleseg  # noqa: F401
    from paddleseg.cvlibs import Config, SegBuilder

    return SegBuilder(Config(config, opts=["model.backbone.pretrained=None"])).model


def check_classes(checkpoint, task: str) -> Optional[str]:
    """A warning when an mmdet checkpoint's classes are not COCO's 80 in the order PaddleDetection uses."""
    classes = (checkpoint.get("meta") or {}).get("CLASSES") if isinstance(checkpoint.get("meta"), dict) else None
    if task == "det" and classes is not None and tuple(classes) != COCO_CLASSES:
        return (f"the checkpoint's {len(classes)} classes are not COCO's 80 in the category-id order that "
                "PaddleDetection's COCO reader uses: label indices mean what the checkpoint's meta CLASSES say")
    return None


def convert(args: argparse.Namespace) -> Tuple[Dict[str, np.ndarray], int, str]:
    """(converted weights, size of the target, the command that evaluates them)."""
    found = read_source(args.input)
    weights, kind = found.weights, found.kind
    stages = cascade_stages(weights) if kind == "detector" else 0
    source = found.report.notes.pop(0) + (f": a Cascade Mask R-CNN, {stages} stages" if stages else "")
    print(f"{args.input}: {source}")  # the first line names the source
    if args.config or (kind in ("detector", "segmenter") and not (args.model or args.backbone)):
        config = args.config or recognise_config(weights, kind, args.input)
        task = config_task(config)
        if kind != {"det": "detector", "seg": "segmenter"}[task]:
            raise SwinInputError(f"{config} builds a {'detector' if task == 'det' else 'segmenter'}, but "
                                 f"{args.input} is {KINDS[kind]}")
        print(f"target: {os.path.relpath(config)}")
        target = {k: tuple(v.shape) for k, v in build_config_model(config, task).state_dict().items()}
        converted, report = (convert_mmdet if task == "det" else convert_mmseg)(weights, target, args.input)
        report.notes = found.report.notes + report.notes
        warning = check_classes(found.file.checkpoint, task)
        if warning:
            report.notes.append(f"warning: {warning}")
        tool = (f"tools/det_eval.py -c {os.path.relpath(config)} -o weights={args.output}" if task == "det" else
                f"tools/seg_eval.py --config {os.path.relpath(config)} --model_path {args.output}")
    else:
        model, name = build_target(found, args)
        print(f"target: {name}")
        target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        converted, report = convert_source(found, target, args.input)
        tool = f"swin_backbone.load_pretrained(model, {args.output!r})"
    print(report.summary())
    if args.strict and not report.clean:
        raise CheckpointKeyError(f"--strict: {args.input} does not match the target exactly")
    return converted, len(target), tool


def main(argv=None) -> int:
    args = parse_args(argv)
    converted, target_size, tool = convert(args)
    import paddle

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    # Only what came from the checkpoint: layers it lacks stay reported as missing when the file is loaded.
    paddle.save(converted, args.output)
    print(f"wrote {args.output} ({len(converted)} of {target_size} tensors from the checkpoint); use it with "
          f"{tool}")
    return 0


if __name__ == "__main__":
    run_tool(main)
