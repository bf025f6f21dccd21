"""Shared set-up of the detection tools: config loading, runtime checks, dataset checks, weights."""
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import paddle  # noqa: E402

import swin_backbone.ppdet  # noqa: E402,F401  (registers SwinBackbone, sets FLAGS_set_to_1d)
from swin_backbone import load_pretrained  # noqa: E402
from swin_backbone.runtime import set_num_threads  # noqa: E402

COCO_LAYOUT = ("COCO layout: DATASET_DIR/ANNO_PATH (instances json with images, annotations with "
               "polygon segmentation, categories) and DATASET_DIR/IMAGE_DIR/<file_name> for every image")


def arg_parser(description: str):
    from ppdet.utils.cli import ArgsParser

    parser = ArgsParser()
    parser.description = description
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    return parser


def load_config(path: str, overrides: dict):
    """PaddleDetection config with `-o` overrides, adjusted to this machine (CPU: no GPU, no AMP)."""
    from ppdet.core.workspace import load_config as ppdet_load_config, merge_config

    if not os.path.isfile(path):
        raise FileNotFoundError(f"config not found: {path}")
    cfg = ppdet_load_config(path)
    for key, value in overrides.items():
        target = cfg.get(key)
        if isinstance(value, dict) and target is not None and not isinstance(target, dict):
            # datasets are objects (!COCODataSet): ppdet's merge would replace them with the dict
            for attribute, setting in value.items():
                setattr(target, attribute, setting)
        else:
            merge_config({key: value})
    for device in ("use_npu", "use_xpu", "use_mlu"):
        cfg.setdefault(device, False)
    if cfg.get("use_gpu", False) and not paddle.is_compiled_with_cuda():
        print("note: this Paddle has no CUDA: running on CPU (use_gpu=false; AMP stays off)")
        cfg.use_gpu = False
    paddle.set_device("gpu" if cfg.use_gpu else "cpu")
    if "output_eval" not in cfg:  # ppdet would write bbox.json / mask.json into the working directory
        cfg.output_eval = os.path.join(cfg.get("save_dir", "output"), cfg.filename)
        os.makedirs(cfg.output_eval, exist_ok=True)
    return cfg


def prepare(args) -> None:
    if not paddle.is_compiled_with_cuda():
        set_num_threads(args.threads)


def check_coco(cfg, *names: str) -> None:
    """Fail with one clear message when a dataset's annotation file or image folder is missing."""
    for name in names:
        dataset = cfg.get(name)
        if dataset is None:
            continue
        root = getattr(dataset, "dataset_dir", "") or ""
        anno = os.path.join(root, getattr(dataset, "anno_path", "") or "")
        images = os.path.join(root, getattr(dataset, "image_dir", "") or "")
        problems = []
        if not os.path.isfile(anno):
            problems.append(f"annotation file {anno!r} is missing")
        if name != "TestDataset" and not os.path.isdir(images):
            problems.append(f"image folder {images!r} is missing")
        if problems:
            raise FileNotFoundError(
                f"{name}: {' and '.join(problems)}. Expected the {COCO_LAYOUT}; set the paths with "
                f"-o {name}.dataset_dir=... {name}.anno_path=... {name}.image_dir=...")


def is_backbone_weights(path: str) -> bool:
    """An authors' .pth, or a .pdparams of the backbone alone (no `backbone.` keys)."""
    if path.endswith(".pth"):
        return True
    weights = paddle.load(path if path.endswith(".pdparams") else path + ".pdparams")
    return not any(k.startswith("backbone.") for k in weights)


def load_pretrain(trainer, path: str) -> None:
    """Backbone weights (authors' .pth or ours) through our converter; whole-detector ones through ppdet."""
    if not (os.path.isfile(path) or os.path.isfile(path + ".pdparams")):
        raise FileNotFoundError(f"pretrain_weights not found: {path} (an authors' .pth, a converted backbone "
                                ".pdparams, or detector weights)")
    if is_backbone_weights(path):
        load_pretrained(trainer.model.backbone, path)
    else:
        trainer.load_weights(path)


def image_list(image: Optional[str], folder: Optional[str]) -> List[str]:
    if image:
        if not os.path.isfile(image):
            raise FileNotFoundError(f"--image: no file at {image}")
        return [os.path.abspath(image)]
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f"--dir: no folder at {folder}")
    found = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")))
    if not found:
        raise FileNotFoundError(f"--dir: no .jpg/.jpeg/.png/.bmp images in {folder}")
    return found
