"""Train a Swin Mask R-CNN with PaddleDetection.

    python tools/det_train.py -c det_configs/mask_rcnn_swin_tiny_fpn_1x_coco.yml [--eval] [--resume PATH]
        [-o pretrain_weights=swin_tiny_patch4_window7_224.pth TrainDataset.dataset_dir=/data/coco ...]
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/det_train.py -c ...   # multi-GPU
"""

from det_common import arg_parser, check_coco, check_settings, load_config, load_pretrain, prepare, resume_weights
from swin_backbone.runtime import non_negative_int, run_tool, seed_everything


def main(argv=None):
    parser = arg_parser(__doc__)
    parser.add_argument("--eval", action="store_true", help="evaluate after every snapshot")
    parser.add_argument("--resume", help="checkpoint to continue from (path without .pdparams)")
    parser.add_argument("--seed", type=non_negative_int, help="seed Python, NumPy and Paddle (initialisation, "
                        "data order, augmentation) so that a run can be repeated")
    args = parser.parse_args(argv)
    prepare(args)
    if args.seed is not None:
        seed_everything(args.seed)
    cfg = load_config(args.config, args.opt)
    check_settings(cfg, "train")
    check_coco(cfg, "TrainDataset", *(["EvalDataset"] if args.eval else []))
    from ppdet.engine import Trainer, init_parallel_env

    init_parallel_env()
    trainer = Trainer(cfg, mode="train")
    if args.resume:
        resume_weights(trainer, args.resume)
    elif cfg.get("pretrain_weights"):
        load_pretrain(trainer, cfg.pretrain_weights, strict=args.strict)
    trainer.train(args.eval)
    return trainer


if __name__ == "__main__":
    run_tool(main)
