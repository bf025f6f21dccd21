"""Train, evaluate and predict with a Swin classifier on CIFAR-10.

    python tools/cls_train.py --data cifar-10-python.tar.gz --output output/cifar
    python tools/cls_train.py --synthetic --epochs 3                    # no download needed
    python tools/cls_train.py --data ... --model swin_tiny_patch4_window7_224 --pretrained swin_t.pth \\
        --optimizer sgd --lr 0.01 --epochs 10                          # the reference article's setting
    python tools/cls_train.py --data ... --eval-only --weights output/cifar/best/model.pdparams
    python tools/cls_train.py --predict cat.png --weights output/cifar/best/model.pdparams
    python -m paddle.distributed.launch --gpus 0,1 tools/cls_train.py --data ... --amp    # 2 GPUs
    python -m paddle.distributed.launch --nproc_per_node 2 tools/cls_train.py --synthetic  # 2 CPU processes

Default recipe (a Swin-T trained from scratch at 32 px with patch 2, window 4): AdamW, weight decay 0.05
(none on biases, norms, bias tables, position embedding), linear warmup then cosine decay, label smoothing
0.1, random crop (pad 4) + flip, gradient clipping at 5, drop path 0.1.

On several processes a step takes --batch-size images on each (cls_batches.py: who takes which images, and
how they are augmented); --lr is the LR of that whole step.
"""
import argparse
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

import checkpoint_io  # noqa: E402
import distributed  # noqa: E402
from cifar10 import (CLASSES, LAYOUT, TRAIN_BATCHES, fingerprint, load_cifar10, synthetic_cifar10,  # noqa: E402,F401
                     write_cifar10_tarball)
from cls_batches import (Part, augment, batches, global_batch_of, mix_batch, mixing_rng,  # noqa: E402,F401
                         normalize, rand_augment, random_crop_flip, soft_targets, steps_per_epoch, train_parts)
from swin_backbone import PRESETS, create_classifier, load_pretrained  # noqa: E402
from swin_backbone.errors import MalformedFileError, SwinInputError  # noqa: E402
from swin_backbone.model import NO_WEIGHT_DECAY_KEYWORDS  # noqa: E402
from swin_backbone.runtime import (fraction, non_negative_float, non_negative_int, positive_float,  # noqa: E402
                                   positive_int, positive_int_list, run_tool, seed_everything, set_num_threads)

# ------------------------------------------------------------------------------------------- schedule
def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.01) -> float:
    """Multiplier of the base LR at `step`: linear warmup from ~0, then cosine decay to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def no_decay(name: str, param: paddle.Tensor) -> bool:
    """The authors' exclusions from weight decay: biases, norms (all 1-D), bias tables, position embedding."""
    return param.ndim <= 1 or any(keyword in name for keyword in NO_WEIGHT_DECAY_KEYWORDS)


def build_optimizer(model: paddle.nn.Layer, args: argparse.Namespace, scheduler) -> paddle.optimizer.Optimizer:
    clip = paddle.nn.ClipGradByGlobalNorm(args.clip_grad) if args.clip_grad > 0 else None
    if args.optimizer == "sgd":
        return paddle.optimizer.Momentum(scheduler, momentum=0.9, parameters=model.parameters(),
                                         weight_decay=args.weight_decay, grad_clip=clip)
    # Paddle's hook sees internal names (linear_3.w_0), so map them from the structured ones.
    decayed = {p.name for n, p in model.named_parameters() if not no_decay(n, p)}
    return paddle.optimizer.AdamW(scheduler, parameters=model.parameters(), weight_decay=args.weight_decay,
                                  apply_decay_param_fun=lambda internal: internal in decayed, grad_clip=clip)


# -------------------------------------------------------------------------------------------- helpers
class Logger:
    """Prints and appends to output/log.txt (rank 0 only); VisualDL scalars when it is installed."""

    def __init__(self, output: Optional[str], enabled: bool):
        self.enabled = enabled
        self.file = None
        self.writer = None
        if enabled and output:
            os.makedirs(output, exist_ok=True)
            self.file = open(os.path.join(output, "log.txt"), "a", encoding="utf-8")
            try:
                from visualdl import LogWriter

                self.writer = LogWriter(logdir=os.path.join(output, "vdl"))
            except Exception:  # VisualDL is optional
                self.writer = None

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)
            if self.file:
                self.file.write(message + "\n")
                self.file.flush()

    def scalars(self, step: int, **values: float) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag=tag, value=value, step=step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def progress(step: int, total: int, loss: float, rate: float, enabled: bool) -> None:
    if enabled and sys.stdout.isatty():
        filled = int(30 * step / total)
        print(f"\r  [{'=' * filled}{' ' * (30 - filled)}] {step}/{total} loss {loss:.4f} {rate:.0f} img/s",
              end="" if step < total else "\n", flush=True)


def model_input(images: np.ndarray, img_size: int) -> paddle.Tensor:
    """Normalised float batch -> tensor at the model's input size (bilinear resize when it is not 32)."""
    x = paddle.to_tensor(images)
    if x.shape[2] != img_size:
        x = F.interpolate(x, size=[img_size, img_size], mode="bilinear", align_corners=False)
    return x


@paddle.no_grad()
def evaluate(model, images: np.ndarray, labels: np.ndarray, img_size: int, batch_size: int,
             rank: int = 0, world: int = 1) -> np.ndarray:
    """Confusion counts [10, 10] (true, predicted) over this rank's share, summed across ranks."""
    model.eval()
    confusion = np.zeros((10, 10), np.int64)
    for index in batches(len(labels), batch_size, None, rank, world):
        logits = model(model_input(normalize(images[index]), img_size))
        np.add.at(confusion, (labels[index], logits.argmax(axis=1).numpy()), 1)
    return distributed.all_sum(confusion)


def build_model(args: argparse.Namespace):
    overrides = {k: v for k, v in (("embed_dim", args.embed_dim), ("depths", args.depths),
                                   ("num_heads", args.num_heads)) if v}
    return create_classifier(args.model, num_classes=10, drop_path_rate=args.drop_path, **overrides)


def rename_optimizer_state(state: Dict, names: Dict[str, str]) -> Dict:
    """Optimizer state keys are `<param name>_<accumulator>`; swap the param part using `names`.

    Paddle keys them by internal names (conv2d_2.w_0) that depend on how many layers the process built
    before, so checkpoints store structured names (layers.0.blocks.0.attn.qkv.weight) instead.
    """
    renamed = {}
    prefixes = sorted(names, key=len, reverse=True)
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p + "_")), None)
        renamed[names[prefix] + key[len(prefix):] if prefix else key] = value
    return renamed


def save_checkpoint(folder: str, model, optimizer, epoch: int, best: float, args: argparse.Namespace,
                    world: int) -> None:
    """Model, optimizer (with its LR scheduler), epoch, best accuracy and the global batch; the old checkpoint
    goes only once the new one is complete (checkpoint_io). Rank 0 alone calls this."""
    to_structured = {p.name: n for n, p in model.named_parameters()}
    checkpoint_io.save(folder, model.state_dict(), rename_optimizer_state(optimizer.state_dict(), to_structured),
                       {"epoch": epoch, "best_top1": best, "seed": args.seed, "model": args.model,
                        "batch_size": args.batch_size, "processes": world, "args": vars(args)})


def check_resumable(folder: str, state: dict, args: argparse.Namespace, world: int) -> None:
    """A run continues exactly on any number of processes that keeps its images per step (the LR schedule
    and the data order are counted in those steps); anything else is a one-line error saying what to pass."""
    if state.get("model") != args.model:
        raise SwinInputError(f"--resume {folder}: the checkpoint is for --model {state.get('model')}, "
                             f"this run builds {args.model}")
    then, processes, per_process = global_batch_of(state)
    if then != world * args.batch_size:
        fix = (f"pass --batch-size {then // world} to continue it on {world} process(es)" if then % world == 0
               else f"run it on a number of processes that divides {then}")
        raise SwinInputError(f"--resume {folder}: that run took {then} images per step ({processes} process(es) "
                             f"x --batch-size {per_process}), this one {world * args.batch_size} ({world} x "
                             f"{args.batch_size}); {fix}")


def resume(folder: str, model, optimizer, args: argparse.Namespace, world: int) -> Tuple[int, float]:
    """Load the newest complete checkpoint of a run into model and optimizer; (next epoch, best top-1).
    Rank 0 has already put the newest complete copy in place (checkpoint_io.recover); every process reads."""
    model_state, optimizer_state, state = checkpoint_io.load(os.path.join(folder, "last"), repair=False)
    check_resumable(folder, state, args, world)
    try:
        model.set_state_dict(model_state)
        to_internal = {n: p.name for n, p in model.named_parameters()}
        optimizer.set_state_dict(rename_optimizer_state(optimizer_state, to_internal))
        return state["epoch"] + 1, float(state.get("best_top1", 0.0))
    except (ValueError, KeyError, AssertionError, TypeError) as error:
        raise MalformedFileError(f"--resume {folder}: the checkpoint does not fit this run ({error})") from None


def shared_settings(args: argparse.Namespace) -> Dict[str, object]:
    """The settings every process must share (paths, threads and output may differ between machines)."""
    local = {"data", "output", "resume", "threads", "weights", "predict", "pretrained"}
    return {f"--{name.replace('_', '-')}": value for name, value in sorted(vars(args).items()) if name not in local}


def load_data(args: argparse.Namespace):
    return synthetic_cifar10() if args.synthetic else load_cifar10(args.data)


def step_loss(logits: paddle.Tensor, targets: np.ndarray, part: Part, world: int) -> paddle.Tensor:
    """This process's share of the mean loss over the global batch: sum over its images x world / batch, so
    that the gradient average over processes (DataParallel) is the gradient of the global batch's mean."""
    per_image = F.cross_entropy(logits.astype("float32"), paddle.to_tensor(targets), soft_label=True,
                                reduction="none").flatten()
    return (per_image * paddle.to_tensor(part.weights() * (world / part.batch))).sum()


def describe_batch(args: argparse.Namespace, world: int) -> str:
    images = world * args.batch_size
    return (f"{world} process(es) x --batch-size {args.batch_size} = {images} images per step; --lr {args.lr:g} "
            f"is the LR of that step (not scaled by the tool; the default recipe's 1e-3 is for 128 images per "
            f"step, scaled linearly {1e-3 * images / 128:.3g} for {images})")


# ---------------------------------------------------------------------------------------------- modes
def train(args: argparse.Namespace) -> float:
    place = distributed.start()
    rank, world = place.rank, place.world
    log = Logger(args.output, place.writer)
    data, error = None, None
    try:  # a failure here (data not found on one machine) ends every process with one line, not a hang
        data = load_data(args)
        if args.resume and place.writer:
            checkpoint_io.recover(os.path.join(args.resume, "last"))
    except (FileNotFoundError, SwinInputError) as caught:
        error = caught
    distributed.agree(place, lambda: {**shared_settings(args), "training data": fingerprint(data)}, error)
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    seed_everything(args.seed)  # initialisation draws from --seed: the same model on every run and process
    model = build_model(args)
    img_size = model.img_size[0]
    if args.pretrained:
        load_pretrained(model, args.pretrained, strict=args.strict, verbose=place.writer)
    steps = steps_per_epoch(len(train_y), world * args.batch_size)
    total_steps = steps * args.epochs
    warmup = int(args.warmup_epochs * steps)
    if warmup > total_steps // 5:
        warmup = total_steps // 5
        log(f"note: warmup shortened to {warmup} steps (20% of this {args.epochs}-epoch run)")
    scheduler = paddle.optimizer.lr.LambdaDecay(
        args.lr, lambda step: lr_factor(step, warmup, total_steps, args.min_lr_ratio))
    optimizer = build_optimizer(model, args, scheduler)
    scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if args.amp else None

    start_epoch, best = 0, 0.0
    if args.resume:
        error = None
        try:
            start_epoch, best = resume(args.resume, model, optimizer, args, world)
        except (FileNotFoundError, SwinInputError) as caught:
            error = caught
        distributed.agree(place, lambda: {"--resume checkpoint": (start_epoch, best)}, error)
        log(f"resumed from {args.resume} after epoch {start_epoch}")
    if world > 1:
        model = paddle.DataParallel(model)
    log(f"model {args.model}: {sum(int(np.prod(p.shape)) for p in model.parameters()):,} parameters, "
        f"input {img_size}px; {len(train_y)} train / {len(test_y)} test images; {steps} steps per epoch")
    log(f"batch: {describe_batch(args, world)}")

    finished = 0
    for epoch in range(start_epoch, args.epochs):
        paddle.seed(distributed.stream_seed(args.seed, 2, epoch, rank))  # dropout, drop path: per epoch and rank
        model.train()
        losses, tic = [], time.perf_counter()
        for step, part in enumerate(train_parts(len(train_y), args.batch_size, args.seed, epoch, rank, world)):
            images = augment(train_x[part.index], part.index, args.seed, epoch, args.randaugment)
            inputs, targets = normalize(images), soft_targets(train_y[part.index], 10, args.smoothing)
            real = part.real
            inputs[:real], targets[:real] = mix_batch(inputs[:real], targets[:real],
                                                      mixing_rng(args.seed, epoch, step, rank), args.mixup, args.cutmix)
            with paddle.amp.auto_cast(enable=args.amp):
                loss = step_loss(model(model_input(inputs, img_size)), targets, part, world)
            loss_value = float(distributed.all_sum(np.array([float(loss)]))[0]) / world  # the global batch's mean
            if not math.isfinite(loss_value):
                last = os.path.join(args.output, "last")
                kept = (f"the last good checkpoint is kept at {last}" if os.path.isdir(last)
                        else "no checkpoint had been written yet")
                message = (f"loss diverged ({loss_value}) at epoch {epoch + 1} step {step + 1}; {kept}. "
                           "Lower --lr or raise --warmup-epochs.")
                log(message)
                log.close()
                raise SystemExit(message)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            losses.append(loss_value)
            progress(step + 1, steps, float(np.mean(losses)), (step + 1) * world * args.batch_size /
                     (time.perf_counter() - tic), place.writer)
        throughput = len(train_y) / (time.perf_counter() - tic)
        confusion = evaluate(model, test_x, test_y, img_size, args.batch_size, rank, world)
        top1 = 100.0 * np.trace(confusion) / confusion.sum()
        is_best = top1 > best
        best = max(best, top1)
        lr = optimizer.get_lr()
        log(f"epoch {epoch + 1}/{args.epochs}  train loss {np.mean(losses):.6f}  test top-1 {top1:.2f}%  "
            f"{throughput:.1f} img/s  lr {lr:.2e}")
        log.scalars(epoch + 1, train_loss=float(np.mean(losses)), test_top1=top1, throughput=throughput, lr=lr)
        if place.writer:
            core = model._layers if isinstance(model, paddle.DataParallel) else model
            save_checkpoint(os.path.join(args.output, "last"), core, optimizer, epoch, best, args, world)
            if is_best:
                save_checkpoint(os.path.join(args.output, "best"), core, optimizer, epoch, best, args, world)
        finished += 1
        if args.stop_after and finished >= args.stop_after and epoch + 1 < args.epochs:
            log(f"stopping after {finished} epoch(s) as asked; continue with --resume {args.output}")
            break
    log(f"best test top-1: {best:.2f}%")
    log.close()
    return best


def require_weights(path: str) -> None:
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"--weights: no file at {path!r} (a model.pdparams written by training, "
                                "or an authors' .pth)")


def load_weights(model, path: str) -> None:
    require_weights(path)
    load_pretrained(model, path, strict=True, verbose=False)


def eval_only(args: argparse.Namespace) -> float:
    place = distributed.start()
    data, error = None, None
    try:
        data = load_data(args)
        require_weights(args.weights)
    except (FileNotFoundError, SwinInputError) as caught:
        error = caught
    distributed.agree(place, lambda: {**shared_settings(args), "test data": fingerprint(data)}, error)
    model = build_model(args)
    load_weights(model, args.weights)
    confusion = evaluate(model, *data["test"], model.img_size[0], args.batch_size, place.rank, place.world)
    top1 = 100.0 * np.trace(confusion) / confusion.sum()
    if place.writer:
        print(f"{'class':<12}{'images':>8}{'top-1':>9}")
        for i, name in enumerate(CLASSES):
            total = confusion[i].sum()
            print(f"{name:<12}{total:>8}{(100.0 * confusion[i, i] / total if total else float('nan')):>8.2f}%")
        print(f"test top-1: {top1:.2f}%  ({int(confusion.sum())} images, {place.world} process(es))")
    return top1


def predict(args: argparse.Namespace) -> List[Tuple[str, float]]:
    from PIL import Image

    if not os.path.isfile(args.predict):
        raise FileNotFoundError(f"--predict: no image at {args.predict!r}")
    try:
        with Image.open(args.predict) as picture:
            image = np.asarray(picture.convert("RGB").resize((32, 32), Image.BILINEAR))
    except (OSError, ValueError, SyntaxError) as error:  # PIL's decoders raise all three on bad files
        raise MalformedFileError(f"--predict {args.predict}: not a readable picture ({error})") from None
    model = build_model(args)
    load_weights(model, args.weights)
    model.eval()
    with paddle.no_grad():
        probs = F.softmax(model(model_input(normalize(image[None]), model.img_size[0])), axis=-1).numpy()[0]
    top5 = [(CLASSES[i], float(probs[i])) for i in np.argsort(-probs)[:5]]
    for name, prob in top5:
        print(f"{name:<12}{100 * prob:6.2f}%")
    return top5


# ------------------------------------------------------------------------------------------------ cli
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("data")
    source.add_argument("--data", help="cifar-10-python.tar.gz or the folder holding cifar-10-batches-py/")
    source.add_argument("--synthetic", action="store_true", help="a small generated CIFAR-format set, no files")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="swin_tiny_patch2_window4_32", choices=sorted(PRESETS))
    model.add_argument("--pretrained", help="weights to fine-tune from (.pdparams, or any checkpoint "
                       "convert_weights.py reads: authors' .pth, HF / timm folder, torchvision, mmpretrain)")
    model.add_argument("--strict", action="store_true",
                       help="fail if --pretrained leaves any tensor of the model at initialisation")
    model.add_argument("--embed-dim", type=positive_int, help="override the preset's embed_dim")
    model.add_argument("--depths", type=positive_int_list, help="e.g. 2,2,6,2")
    model.add_argument("--num-heads", type=positive_int_list, help="e.g. 3,6,12,24")
    model.add_argument("--drop-path", type=fraction, default=0.1)
    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=positive_int, default=100)
    recipe.add_argument("--batch-size", type=positive_int, default=128,
                        help="images per process and step (a step takes processes x this)")
    recipe.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    recipe.add_argument("--lr", type=positive_float, default=1e-3, help="LR of one step (all processes' images together; "
                        "not scaled by the tool: scale it linearly with the images per step, 1e-3 is for 128)")
    recipe.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    recipe.add_argument("--warmup-epochs", type=non_negative_float, default=5)
    recipe.add_argument("--min-lr-ratio", type=fraction, default=0.01)
    recipe.add_argument("--smoothing", type=fraction, default=0.1)
    recipe.add_argument("--mixup", type=non_negative_float, default=0.0, help="mixup alpha (0: off; 0.8 is common)")
    recipe.add_argument("--cutmix", type=non_negative_float, default=0.0, help="cutmix alpha (0: off; 1.0 is common)")
    recipe.add_argument("--randaugment", type=non_negative_int, default=0, help="RandAugment magnitude 1-10 (0: off)")
    recipe.add_argument("--clip-grad", type=non_negative_float, default=5.0, help="global-norm clip (0: off)")
    recipe.add_argument("--amp", action="store_true", help="mixed precision (GPU)")
    recipe.add_argument("--seed", type=non_negative_int, default=0)
    run = parser.add_argument_group("run")
    run.add_argument("--output", help="folder for logs and checkpoints (default: output/cifar10, or --resume)")
    run.add_argument("--resume", help="output folder of an earlier run to continue")
    run.add_argument("--stop-after", type=positive_int, help="stop after this many epochs (continue with --resume)")
    run.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    run.add_argument("--eval-only", action="store_true", help="evaluate --weights on the test split")
    run.add_argument("--weights", help="weights for --eval-only / --predict")
    run.add_argument("--predict", metavar="IMG", help="print the top-5 classes of one image")
    args = parser.parse_args(argv)
    args.output = args.output or args.resume or "output/cifar10"
    if not args.predict and not args.synthetic and not args.data:
        parser.error(f"give --data ({LAYOUT}) or --synthetic")
    if args.amp and not paddle.is_compiled_with_cuda():
        parser.error("--amp needs a GPU build of Paddle (paddlepaddle-gpu)")
    if args.randaugment > 10:
        parser.error(f"argument --randaugment: {args.randaugment} is not a magnitude in 0..10")
    if args.smoothing >= 1:
        parser.error("argument --smoothing: must be below 1")
    if (args.eval_only or args.predict) and not args.weights:
        parser.error("--eval-only and --predict need --weights")
    return args


def main(argv: Optional[Sequence[str]] = None):
    args = parse_args(argv)
    if not paddle.is_compiled_with_cuda():
        set_num_threads(args.threads)
    if args.predict:
        return predict(args)
    if args.eval_only:
        return eval_only(args)
    return train(args)


if __name__ == "__main__":
    run_tool(main)