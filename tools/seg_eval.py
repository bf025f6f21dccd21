"""Evaluate a Swin UperNet (mIoU, per-class IoU) with PaddleSeg.

    python tools/seg_eval.py --config seg_configs/upernet_swin_tiny_ade20k_512x512_160k.yml \
        --model_path output/best_model/model.pdparams [--aug_eval --scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip_horizontal]
"""

from seg_common import arg_parser, check_ade20k, setup
from swin_backbone.runtime import positive_float, run_tool
from swin_backbone.convert import check_fill
from swin_backbone.safe_load import check_pickle_file


def main(argv=None):
    parser = arg_parser(__doc__)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--aug_eval", action="store_true", help="multi-scale and/or flip test")
    parser.add_argument("--scales", nargs="+", type=positive_float, default=[1.0])
    parser.add_argument("--flip_horizontal", action="store_true")
    args = parser.parse_args(argv)
    check_pickle_file(args.model_path, "--model_path")  # before PaddleSeg unpickles it
    cfg, builder = setup(args, whole_model=True)
    check_ade20k(cfg.val_dataset_cfg)
    from paddleseg.utils import utils

    from swin_backbone.paddleseg import evaluate  # PaddleSeg's, plus the mIoU over the classes present

    model = builder.model
    check_fill(model, args.model_path, "--model_path", strict=args.strict)  # says what is left at initialisation
    utils.load_entire_model(model, args.model_path)
    return evaluate(model, builder.val_dataset, aug_eval=args.aug_eval, scales=args.scales,
                    flip_horizontal=args.flip_horizontal, precision=args.precision, amp_level=args.amp_level,
                    num_workers=args.num_workers)


if __name__ == "__main__":
    run_tool(main)
