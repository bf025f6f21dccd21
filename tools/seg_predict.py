"""Segment pictures with a Swin UperNet; writes colour masks and overlays into --save_dir.

    python tools/seg_predict.py --config seg_configs/upernet_swin_tiny_ade20k_512x512_160k.yml \
        --model_path output/best_model/model.pdparams --image_path demo.jpg|pictures/ --save_dir output/predict
"""
import os

from seg_common import arg_parser, setup
from swin_backbone.runtime import positive_float, run_tool
from swin_backbone.convert import check_fill
from swin_backbone.safe_load import check_pickle_file


def main(argv=None):
    parser = arg_parser(__doc__)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--image_path", required=True, help="a picture, a folder, or a .txt list of pictures")
    parser.add_argument("--save_dir", default="output/predict")
    parser.add_argument("--aug_pred", action="store_true")
    parser.add_argument("--scales", nargs="+", type=positive_float, default=[1.0])
    parser.add_argument("--flip_horizontal", action="store_true")
    args = parser.parse_args(argv)
    if not os.path.exists(args.image_path):
        raise FileNotFoundError(f"--image_path: nothing at {args.image_path}")
    check_pickle_file(args.model_path, "--model_path")  # before PaddleSeg unpickles it
    cfg, builder = setup(args, whole_model=True)
    from paddleseg.core import predict
    from paddleseg.transforms import Compose
    from paddleseg.utils import get_image_list

    check_fill(builder.model, args.model_path, "--model_path", strict=args.strict)  # what stays at initialisation
    image_list, image_dir = get_image_list(args.image_path)
    if not image_list:
        raise FileNotFoundError(f"--image_path: no pictures found at {args.image_path}")
    predict(builder.model, model_path=args.model_path, transforms=Compose(builder.val_transforms),
            image_list=image_list, image_dir=image_dir, save_dir=args.save_dir, aug_pred=args.aug_pred,
            scales=args.scales, flip_horizontal=args.flip_horizontal)
    return image_list


if __name__ == "__main__":
    run_tool(main)
