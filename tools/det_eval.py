"""Evaluate a Swin Mask R-CNN (COCO bbox and segm AP with pycocotools).

    python tools/det_eval.py -c det_configs/mask_rcnn_swin_tiny_fpn_1x_coco.yml -o weights=output/.../model_final
"""

from det_common import arg_parser, check_coco, check_settings, load_config, load_weights, prepare
from distributed import group
from swin_backbone.errors import SwinInputError
from swin_backbone.runtime import run_tool


def main(argv=None):
    args = arg_parser(__doc__).parse_args(argv)
    if group().world > 1:  # PaddleDetection 2.6 evaluates on one device: every process would write bbox.json
        raise SwinInputError("det_eval.py runs on one process (PaddleDetection 2.6 evaluates on one device): "
                             "start it without paddle.distributed.launch")
    prepare(args)
    cfg = load_config(args.config, args.opt)
    check_settings(cfg, "eval")
    check_coco(cfg, "EvalDataset")
    from ppdet.engine import Trainer, init_parallel_env

    init_parallel_env()
    trainer = Trainer(cfg, mode="eval")
    load_weights(trainer, cfg.weights, strict=args.strict)
    trainer.evaluate()
    return trainer


if __name__ == "__main__":
    run_tool(main)
