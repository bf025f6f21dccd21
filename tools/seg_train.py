"""Train a Swin UperNet with PaddleSeg.

    python tools/seg_train.py --config seg_configs/upernet_swin_tiny_ade20k_512x512_160k.yml [--do_eval]
        [--resume_model output/iter_16000] [--save_dir output/upernet_swin_tiny]
        [--opts train_dataset.dataset_root=/data/ADEChallengeData2016 val_dataset.dataset_root=...]
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/seg_train.py --config ... --precision fp16
"""

from checkpoint_io import atomic_saves
from distributed import seed_data_streams, seed_model_stream
from seg_common import arg_parser, check_ade20k, check_resume, setup, start_distributed, synchronise_batch_norm
from swin_backbone.convert import strict_loads
from swin_backbone.runtime import non_negative_int, positive_float, positive_int, run_tool, seed_everything


def main(argv=None):
    parser = arg_parser(__doc__)
    parser.add_argument("--do_eval", action="store_true", help="evaluate at every save")
    parser.add_argument("--resume_model", help="a save_dir/iter_N folder to continue from")
    parser.add_argument("--save_dir", default="output")
    parser.add_argument("--iters", type=positive_int)
    parser.add_argument("--batch_size", type=positive_int, help="per GPU")
    parser.add_argument("--learning_rate", type=positive_float)
    parser.add_argument("--save_interval", type=positive_int, default=1000)
    parser.add_argument("--log_iters", type=positive_int, default=10)
    parser.add_argument("--keep_checkpoint_max", type=positive_int, default=5)
    parser.add_argument("--use_vdl", action="store_true", help="VisualDL logs")
    parser.add_argument("--seed", type=non_negative_int, help="seed Python, NumPy and Paddle (initialisation, "
                        "data order, augmentation) so that a run can be repeated")
    args = parser.parse_args(argv)

    def prepare():
        if args.resume_model:
            check_resume(args.resume_model)
        cfg, builder = setup(args, iters=args.iters, batch_size=args.batch_size, learning_rate=args.learning_rate)
        check_ade20k(cfg.train_dataset_cfg)
        if args.do_eval:
            check_ade20k(cfg.val_dataset_cfg)
        return cfg, builder

    cfg, builder, place = start_distributed(args, prepare, ("train", "val") if args.do_eval else ("train",))
    if args.seed is not None:  # initialisation from --seed on every process; augmentation per process
        seed_everything(args.seed)
        seed_data_streams(args.seed, place.rank)
    with strict_loads(args.strict):  # the backbone loads its `pretrained` while PaddleSeg builds the model
        model = builder.model
    if args.seed is not None:  # dropout: per process from here on
        seed_model_stream(args.seed, place.rank)
    synchronise_batch_norm(model, place)
    atomic_saves()  # PaddleSeg's checkpoints: each file written whole or not at all
    from paddleseg.core import train

    train(model, builder.train_dataset, val_dataset=builder.val_dataset if args.do_eval else None,
          optimizer=builder.optimizer, save_dir=args.save_dir, iters=cfg.iters, batch_size=cfg.batch_size,
          resume_model=args.resume_model, save_interval=args.save_interval, log_iters=args.log_iters,
          num_workers=args.num_workers, use_vdl=args.use_vdl and place.writer, losses=builder.loss,
          keep_checkpoint_max=args.keep_checkpoint_max, test_config=cfg.test_config, precision=args.precision,
          amp_level=args.amp_level)


if __name__ == "__main__":
    run_tool(main)
