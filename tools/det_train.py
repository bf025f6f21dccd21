"""Train a Swin Mask R-CNN with PaddleDetection.

    python tools/det_train.py -c det_configs/mask_rcnn_swin_tiny_fpn_1x_coco.yml [--eval] [--resume PATH]
        [-o pretrain_weights=swin_tiny_patch4_window7_224.pth TrainDataset.dataset_dir=/data/coco ...]
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/det_train.py -c ...   # multi-GPU
"""

from det_common import arg_parser, load_pretrain, prepare, resume_weights, start_distributed, synchronise_batch_norm
from checkpoint_io import atomic_saves
from distributed import seed_data_streams, seed_model_stream
from swin_backbone.runtime import non_negative_int, run_tool, seed_everything


def main(argv=None):
    parser = arg_parser(__doc__)
    parser.add_argument("--eval", action="store_true", help="evaluate after every snapshot")
    parser.add_argument("--resume", help="checkpoint to continue from (path without .pdparams)")
    parser.add_argument("--seed", type=non_negative_int, help="seed Python, NumPy and Paddle (initialisation, "
                        "data order, augmentation) so that a run can be repeated")
    args = parser.parse_args(argv)
    prepare(args)
    cfg, place = start_distributed(args, "train", ("TrainDataset", *(["EvalDataset"] if args.eval else [])))
    if args.seed is not None:  # initialisation from --seed on every process; augmentation per process
        seed_everything(args.seed)
        seed_data_streams(args.seed, place.rank)
    from ppdet.engine import Trainer

    trainer = Trainer(cfg, mode="train")
    atomic_saves()  # PaddleDetection's checkpoints: each file written whole or not at all
    if args.seed is not None:  # dropout and the heads' sampling: per process from here on
        seed_model_stream(args.seed, place.rank)
    if args.resume:
        resume_weights(trainer, args.resume)
    elif cfg.get("pretrain_weights"):
        load_pretrain(trainer, cfg.pretrain_weights, strict=args.strict)
    synchronise_batch_norm(trainer, cfg, place)
    trainer.train(args.eval)
    return trainer


if __name__ == "__main__":
    run_tool(main)
