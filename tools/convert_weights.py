"""Convert the authors' Swin checkpoint (.pth) to a Paddle .pdparams for one of our models.

    python tools/convert_weights.py swin_tiny_patch4_window7_224.pth swin_tiny.pdparams \
        --model swin_tiny_patch4_window7_224 [--backbone] [--window-size 12] [--img-size 384] [--num-classes 10]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import paddle  # noqa: E402

from swin_backbone import PRESETS, convert_state_dict  # noqa: E402
from swin_backbone.convert import load_state_file
from swin_backbone.errors import CheckpointKeyError  # noqa: E402
from swin_backbone.presets import create_model  # noqa: E402
from swin_backbone.runtime import non_negative_int, positive_int, run_tool  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="authors' .pth (classification or detection checkpoint)")
    parser.add_argument("output", help="where to write the .pdparams")
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224", choices=sorted(PRESETS),
                        help="preset the weights are for (default: %(default)s)")
    parser.add_argument("--backbone", action="store_true",
                        help="convert for the multi-scale backbone (drops the classifier's head and final norm)")
    parser.add_argument("--window-size", type=positive_int, help="target window size (bias tables are resized)")
    parser.add_argument("--img-size", type=positive_int,
                        help="target image size (absolute position embedding is resized)")
    parser.add_argument("--num-classes", type=non_negative_int,
                        help="target classes (a head of another size is dropped)")
    parser.add_argument("--strict", action="store_true", help="fail on missing or unexpected keys")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model = create_model(args.model, args.backbone, args.window_size, args.img_size, args.num_classes)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights, torch_layout = load_state_file(args.input)
    weights, report = convert_state_dict(weights, target, torch_layout, origin=args.input)
    print(report.summary())
    if args.strict and not report.clean:
        raise CheckpointKeyError(f"--strict: {args.input} does not match {args.model}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    # Only what came from the checkpoint: layers it lacks stay reported as missing when the file is loaded.
    paddle.save({k: paddle.to_tensor(v) for k, v in weights.items()}, args.output)
    print(f"wrote {args.output} ({len(weights)} of {len(target)} tensors from the checkpoint)")
    return 0


if __name__ == "__main__":
    run_tool(main)
