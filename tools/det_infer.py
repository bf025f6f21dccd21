"""Detect and segment objects in pictures; draws boxes and masks into --output_dir.

    python tools/det_infer.py -c det_configs/mask_rcnn_swin_tiny_fpn_1x_coco.yml -o weights=... \
        --image demo.jpg | --dir pictures/  [--output_dir output/infer] [--draw_threshold 0.5]
"""

from det_common import arg_parser, check_coco, image_list, load_config, load_weights, prepare
from swin_backbone.runtime import fraction, run_tool


def main(argv=None):
    parser = arg_parser(__doc__)
    parser.add_argument("--image", help="one picture")
    parser.add_argument("--dir", help="a folder of pictures")
    parser.add_argument("--output_dir", default="output/infer")
    parser.add_argument("--draw_threshold", type=fraction, default=0.5)
    parser.add_argument("--save_results", action="store_true", help="also write bbox/mask json")
    args = parser.parse_args(argv)
    prepare(args)
    cfg = load_config(args.config, args.opt)
    check_coco(cfg, "TestDataset")  # its annotation file gives the category names
    images = image_list(args.image, args.dir)
    from ppdet.engine import Trainer

    trainer = Trainer(cfg, mode="test")
    load_weights(trainer, cfg.weights, strict=args.strict)
    return trainer.predict(images, draw_threshold=args.draw_threshold, output_dir=args.output_dir,
                           save_results=args.save_results)


if __name__ == "__main__":
    run_tool(main)
