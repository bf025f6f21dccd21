"""Shared set-up of the detection tools: config loading, runtime checks, dataset checks, weights."""
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import paddle  # noqa: E402

import swin_backbone.ppdet  # noqa: E402,F401  (registers SwinBackbone, sets FLAGS_set_to_1d)
import distributed  # noqa: E402
import sync_batch_norm  # noqa: E402
from swin_backbone import load_pretrained  # noqa: E402
from swin_backbone.convert import check_fill  # noqa: E402
from swin_backbone.errors import SwinInputError  # noqa: E402
from swin_backbone.runtime import positive_int, set_num_threads  # noqa: E402
from swin_backbone.safe_load import check_pickle_file, load_pickle_file, local_file  # noqa: E402

COCO_LAYOUT = ("COCO layout: DATASET_DIR/ANNO_PATH (instances json with images, annotations with "
               "polygon segmentation, categories) and DATASET_DIR/IMAGE_DIR/<file_name> for every image")


def arg_parser(description: str):
    from ppdet.utils.cli import ArgsParser

    parser = ArgsParser()
    parser.description = description
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    parser.add_argument("--strict", action="store_true",
                        help="fail if weights / pretrain_weights leave any tensor of the model at initialisation")
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
        if distributed.group().writer:  # rank 0 alone evaluates and writes there
            os.makedirs(cfg.output_eval, exist_ok=True)
    return cfg


def check_settings(cfg, mode: str) -> None:
    """One clear error for numbers no run can use (PaddleDetection would divide by them or loop forever)."""
    reader = cfg.get("TrainReader" if mode == "train" else "EvalReader") or {}
    checks = [("batch_size", reader.get("batch_size", 1), 1)]
    if mode == "train":
        checks += [("epoch", cfg.get("epoch", 1), 1), ("LearningRate.base_lr", cfg.LearningRate["base_lr"], None)]
    for name, value, minimum in checks:
        bad = not isinstance(value, (int, float)) or (value < minimum if minimum is not None else value <= 0)
        if bad:
            wanted = f"an integer >= {minimum}" if minimum is not None else "a number > 0"
            raise SwinInputError(f"{name} is {value!r} in {cfg.filename}: expected {wanted}")


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


def ppdet_file(path: str, suffix: str = ".pdparams") -> str:
    """The file PaddleDetection reads for `path` (it strips a .pdparams / .pdopt ending and appends `suffix`)."""
    base = os.path.splitext(path)[0] if path.endswith((".pdparams", ".pdopt")) else path
    return local_file(base + suffix, "weights")


def load_weights(trainer, path: str, strict: bool = False) -> None:
    """Detector weights into trainer.model: checked by our safe reader (which says what they leave at
    initialisation; strict: fails instead), then read by PaddleDetection."""
    check_fill(trainer.model, ppdet_file(path), "weights", strict)
    trainer.load_weights(path)


def resume_weights(trainer, path: str) -> None:
    """Continue a run from PATH.pdparams + PATH.pdopt, both checked by our safe reader first."""
    for suffix in (".pdparams", ".pdopt"):
        check_pickle_file(ppdet_file(path, suffix), "--resume checkpoint")
    trainer.resume_weights(path)


def load_pretrain(trainer, path: str, strict: bool = False) -> None:
    """Backbone weights (any checkpoint our converter reads, or a backbone .pdparams without `backbone.` keys)
    through our converter; whole-detector weights through PaddleDetection, after our safe reader has checked
    them. Either way it says what is left at initialisation (strict: fails instead)."""
    if path.endswith(".pth") or os.path.isdir(path) or path.endswith((".safetensors", ".bin")):
        load_pretrained(trainer.model.backbone, path, strict=strict)
        return
    file = ppdet_file(path)
    checkpoint = load_pickle_file(file, "pretrain_weights")
    if any(str(key).startswith("backbone.") for key in checkpoint):
        check_fill(trainer.model, file, "pretrain_weights", strict, checkpoint=checkpoint)
        trainer.load_weights(path)  # the safe reader has just read this very file
    else:
        load_pretrained(trainer.model.backbone, file, strict=strict)


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


def start_distributed(args, mode: str, datasets=("TrainDataset",)):
    """(config, place): PaddleDetection's parallel start (it seeds Python and NumPy with 99 + rank), the config,
    and the check that every process could read it and its data and has the same; one line otherwise."""
    from ppdet.engine import init_parallel_env

    init_parallel_env()
    place = distributed.start()
    cfg, error = None, None
    try:
        cfg = load_config(args.config, args.opt)
        check_settings(cfg, mode)
        check_coco(cfg, *datasets)
    except (FileNotFoundError, SwinInputError) as caught:
        error = caught

    def settings() -> dict:
        found = distributed.config_settings(args.config, args.opt, "_BASE_")
        for name in datasets:
            dataset = cfg[name]
            anno = os.path.join(dataset.dataset_dir or "", dataset.anno_path or "")
            found[f"{name} annotations"] = distributed.file_fingerprint(anno)
        return found

    distributed.agree(place, settings, error)
    if not place.writer:  # VisualDL: rank 0 alone (PaddleDetection opens a writer on every process)
        cfg.use_vdl = False
    return cfg, place


def synchronise_batch_norm(trainer, cfg, place) -> None:
    """BatchNorm synchronised across CPU processes where the config asks for SyncBN (PaddleDetection converts
    on GPU only)."""
    if cfg.get("norm_type") == "sync_bn" and place.world > 1 and not cfg.use_gpu:
        count = sync_batch_norm.convert(trainer.model)
        if place.writer:
            print(f"norm_type sync_bn: {count} BatchNorm layers synchronised across {place.world} CPU processes "
                  "(CPUSyncBatchNorm; Paddle 2.6 has no CPU SyncBatchNorm kernel)")
