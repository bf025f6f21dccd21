"""Shared set-up of the segmentation tools: config, runtime, ADE20K layout checks."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import paddle  # noqa: E402

import swin_backbone.paddleseg  # noqa: E402,F401  (registers SwinBackbone, SwinUperNet, transforms)
import distributed  # noqa: E402
from swin_backbone.errors import SwinInputError  # noqa: E402
from swin_backbone.runtime import non_negative_int, positive_int, set_num_threads  # noqa: E402
from swin_backbone.safe_load import check_pickle_file  # noqa: E402

ADE_LAYOUT = ("ADEChallengeData2016 layout: ROOT/images/{training,validation}/*.jpg and "
              "ROOT/annotations/{training,validation}/*.png (same names; 0 = unlabelled, 1..150 classes)")


def arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="PaddleSeg config (seg_configs/*.yml)")
    parser.add_argument("--opts", nargs="+", default=None, help="overrides, e.g. train_dataset.dataset_root=DIR")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="fp16: AMP (GPU)")
    parser.add_argument("--amp_level", choices=["O1", "O2"], default="O1")
    parser.add_argument("--num_classes", type=positive_int,
                        help="classes of the dataset (default: the config's, 150 for ADE20K); an ADE20K-layout set "
                             "with N classes has labels 1..N and 0 for unlabelled")
    parser.add_argument("--num_workers", type=non_negative_int, default=0)
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    parser.add_argument("--strict", action="store_true", help="fail if a weights file (--model_path, the "
                        "backbone's pretrained) leaves any tensor of the model at initialisation")
    return parser


def setup(args, whole_model: bool = False, **overrides):
    """(Config, SegBuilder) on the right device; fp16 falls back to fp32 (with a note) without a GPU.

    whole_model: the run loads a whole trained model afterwards, so the backbone's ImageNet `pretrained`
    file named in the config is neither needed nor read.
    """
    from paddleseg.cvlibs import Config, SegBuilder

    if not os.path.isfile(args.config):
        raise FileNotFoundError(f"config not found: {args.config}")
    if paddle.is_compiled_with_cuda():
        paddle.set_device("gpu")
    else:
        paddle.set_device("cpu")
        set_num_threads(args.threads)
        if args.precision == "fp16":
            print("note: this Paddle has no CUDA: training in fp32 (AMP needs a GPU)")
            args.precision = "fp32"
    opts = list(args.opts or [])
    if whole_model:
        opts.insert(0, "model.backbone.pretrained=None")
    if args.num_classes:
        opts.append(f"model.num_classes={args.num_classes}")
    cfg = Config(args.config, opts=opts, **overrides)
    if args.num_classes:
        set_dataset_classes(cfg, args.num_classes)
    return cfg, SegBuilder(cfg)


def set_dataset_classes(cfg, num_classes: int) -> None:
    """Give the config's dataset types `num_classes` classes (PaddleSeg's ADE20K fixes 150 as a class attribute,
    which its builder checks against the model's num_classes)."""
    from paddleseg.cvlibs import manager

    for dataset_cfg in (cfg.train_dataset_cfg, cfg.val_dataset_cfg):
        kind = dataset_cfg.get("type")
        dataset_class = manager.DATASETS.components_dict.get(kind) if kind else None
        if dataset_class is not None and hasattr(dataset_class, "NUM_CLASSES"):
            dataset_class.NUM_CLASSES = num_classes


def check_ade20k(dataset_cfg: dict) -> None:
    """One clear error when an ADE20K split is missing (PaddleSeg would try to download it)."""
    if dataset_cfg.get("type") != "ADE20K":
        return
    root = dataset_cfg.get("dataset_root") or ""
    split = "training" if dataset_cfg.get("mode", "train") == "train" else "validation"
    missing = [os.path.join(root, kind, split) for kind in ("images", "annotations")
               if not os.path.isdir(os.path.join(root, kind, split))]
    if missing:
        raise FileNotFoundError(f"ADE20K not found: {' and '.join(repr(m) for m in missing)} missing. Expected the "
                                f"{ADE_LAYOUT}; set it with --opts train_dataset.dataset_root=ROOT "
                                "val_dataset.dataset_root=ROOT")


def check_resume(folder: str) -> str:
    """A save_dir/iter_N folder whose model.pdparams and model.pdopt pass our safe reader."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--resume_model: no folder at {folder} (expected save_dir/iter_N)")
    for name in ("model.pdparams", "model.pdopt"):
        check_pickle_file(os.path.join(folder, name), "--resume_model")
    return folder


def opts_dict(opts) -> dict:
    """--opts a.b=c ... as {"a.b": "c"}."""
    return dict(option.split("=", 1) if "=" in option else (option, None) for option in opts or [])


def start_distributed(args, prepare, splits=("train",)):
    """(config, builder, place): `prepare()` (config, checks) on every process, then the check that all could
    and have the same config and data; one line naming the process and machine otherwise."""
    place = distributed.start()
    cfg, builder, error = None, None, None
    try:
        cfg, builder = prepare()
    except (FileNotFoundError, SwinInputError) as caught:
        error = caught

    def settings() -> dict:
        found = distributed.config_settings(args.config, opts_dict(args.opts), "_base_")
        resolved = distributed.flatten(distributed.without_local(cfg.dic))  # --opts, --batch_size, --iters applied
        found.update({f"setting {key}": value for key, value in resolved.items()})
        for split in splits:
            dataset_cfg = cfg.train_dataset_cfg if split == "train" else cfg.val_dataset_cfg
            root = dataset_cfg.get("dataset_root") or ""
            folder = "training" if split == "train" else "validation"
            for kind in ("images", "annotations"):
                if os.path.isdir(os.path.join(root, kind, folder)):
                    found[f"{split} {kind}"] = distributed.folder_fingerprint(os.path.join(root, kind, folder))
        return found

    distributed.agree(place, settings, error)
    return cfg, builder, place


def synchronise_batch_norm(model, place) -> None:
    """PaddleSeg's layers ask for SyncBatchNorm and get a plain BatchNorm2D on CPU: synchronise them there."""
    import sync_batch_norm

    if place.world > 1 and not paddle.is_compiled_with_cuda():
        count = sync_batch_norm.convert(model)
        if place.writer:
            print(f"SyncBatchNorm: {count} BatchNorm layers synchronised across {place.world} CPU processes "
                  "(CPUSyncBatchNorm; Paddle 2.6 has no CPU SyncBatchNorm kernel)", flush=True)
