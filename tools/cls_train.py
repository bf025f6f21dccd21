"""Train, evaluate and predict with a Swin classifier on CIFAR-10.

    python tools/cls_train.py --data cifar-10-python.tar.gz --output output/cifar
    python tools/cls_train.py --synthetic --epochs 3                    # no download needed
    python tools/cls_train.py --data ... --model swin_tiny_patch4_window7_224 --pretrained swin_t.pth \\
        --optimizer sgd --lr 0.01 --epochs 10                          # the reference article's setting
    python tools/cls_train.py --data ... --eval-only --weights output/cifar/best/model.pdparams
    python tools/cls_train.py --predict cat.png --weights output/cifar/best/model.pdparams
    python -m paddle.distributed.launch --gpus 0,1 tools/cls_train.py --data ... --amp

Default recipe (a Swin-T trained from scratch at 32 px with patch 2, window 4): AdamW, weight decay 0.05
(none on biases, norms, bias tables, position embedding), linear warmup then cosine decay, label smoothing
0.1, random crop (pad 4) + flip, gradient clipping at 5, drop path 0.1.
"""
import argparse
import math
import os
import pickle
import sys
import tarfile
import time
import zlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

import checkpoint_io  # noqa: E402
from swin_backbone import PRESETS, create_classifier, load_pretrained  # noqa: E402
from swin_backbone.errors import MalformedFileError, SwinInputError  # noqa: E402
from swin_backbone.model import NO_WEIGHT_DECAY_KEYWORDS  # noqa: E402
from swin_backbone.runtime import (fraction, non_negative_float, non_negative_int, positive_float,  # noqa: E402
                                   positive_int, positive_int_list, run_tool, set_num_threads)
from swin_backbone.safe_load import unpickle_bytes  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = np.array([0.4914, 0.4822, 0.4465], "float32")
STD = np.array([0.2470, 0.2435, 0.2616], "float32")
LAYOUT = ("cifar-10-python.tar.gz, or its extracted folder cifar-10-batches-py/ holding data_batch_1..5 and "
          "test_batch (https://www.cs.toronto.edu/~kriz/cifar.html, 'CIFAR-10 python version')")
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
MAX_BATCH_BYTES = 64 * 2 ** 20  # an official batch pickle is 31 MB


# ----------------------------------------------------------------------------------------------- data
def _unpack_batch(blob: bytes, source: str) -> Tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch (read by the safe reader) -> (uint8 [N, 32, 32, 3], int64 [N] in 0..9)."""
    batch = unpickle_bytes(blob, source, encoding="bytes")
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise MalformedFileError(f"{source}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise MalformedFileError(f"{source}: b'data' is {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (len(labels) and (
            labels.min() < 0 or labels.max() >= len(CLASSES))):
        raise MalformedFileError(f"{source}: b'labels' must be {len(data)} integers in 0..{len(CLASSES) - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _read_tarball(path: str, wanted: Sequence[str]) -> Dict[str, bytes]:
    """The wanted batch files of a cifar-10-python.tar.gz; a truncated or corrupt archive is a one-line error."""
    blobs: Dict[str, bytes] = {}
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = os.path.basename(member.name)
                if name in wanted and member.isfile():
                    if member.size > MAX_BATCH_BYTES:
                        raise MalformedFileError(f"{path}: {member.name} is {member.size} bytes, more than a "
                                                 "CIFAR-10 batch")
                    blobs[name] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise MalformedFileError(f"{path}: not a readable .tar.gz (truncated or corrupt?): {error}; "
                                 f"expected {LAYOUT}") from None
    return blobs


def load_cifar10(path: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'test': ...} from the tarball or the extracted folder."""
    blobs: Dict[str, bytes] = {}
    wanted = TRAIN_BATCHES + ["test_batch"]
    if os.path.isfile(path):
        blobs = _read_tarball(path, wanted)
    elif os.path.isdir(path):
        folder = os.path.join(path, "cifar-10-batches-py")
        folder = folder if os.path.isdir(folder) else path
        for name in wanted:
            if os.path.isfile(os.path.join(folder, name)):
                with open(os.path.join(folder, name), "rb") as handle:
                    blobs[name] = handle.read()
    else:
        raise FileNotFoundError(f"CIFAR-10 not found at {path!r}: expected {LAYOUT}")
    missing = [name for name in wanted if name not in blobs]
    if missing:
        raise FileNotFoundError(f"{path!r} lacks {', '.join(missing)}: expected {LAYOUT}")
    train = [_unpack_batch(blobs[name], f"{path}: {name}") for name in TRAIN_BATCHES]
    return {"train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
            "test": _unpack_batch(blobs["test_batch"], f"{path}: test_batch")}


def synthetic_cifar10(train_per_class: int = 100, test_per_class: int = 20, seed: int = 0
                      ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """A small learnable CIFAR-shaped set: each class a colour and stripe orientation, plus noise."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, size=(10, 3))
    rows, cols = np.mgrid[0:32, 0:32]

    def make(per_class: int) -> Tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), per_class)
        images = np.empty((len(labels), 32, 32, 3), np.float32)
        for i, label in enumerate(labels):
            angle = np.pi * label / 10
            stripes = np.sin((rows * np.cos(angle) + cols * np.sin(angle)) * 0.8 + rng.uniform(0, 2 * np.pi))
            images[i] = palette[label] + 40 * stripes[..., None] + rng.normal(0, 25, (32, 32, 3))
        order = rng.permutation(len(labels))
        return np.clip(images, 0, 255).astype(np.uint8)[order], labels[order]

    return {"train": make(train_per_class), "test": make(test_per_class)}


def write_cifar10_tarball(path: str, data: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    """Write `data` as a cifar-10-python.tar.gz in the official format (train split over 5 batches)."""
    def blob(images: np.ndarray, labels: np.ndarray, name: str) -> bytes:
        flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        return pickle.dumps({b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": flat,
                             b"filenames": [f"{i}.png".encode() for i in range(len(labels))]})

    images, labels = data["train"]
    parts = np.array_split(np.arange(len(labels)), 5)
    members = {name: blob(images[idx], labels[idx], name) for name, idx in zip(TRAIN_BATCHES, parts)}
    members["test_batch"] = blob(*data["test"], "test_batch")
    members["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES]})
    import io

    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


# ----------------------------------------------------------------------------------------- augmentation
def random_crop_flip(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """uint8 [N, H, W, 3]: random crop of the zero-padded image, then a random horizontal flip."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    tops = rng.integers(0, 2 * padding + 1, n)
    lefts = rng.integers(0, 2 * padding + 1, n)
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, tops[i]:tops[i] + h, lefts[i]:lefts[i] + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def rand_augment(images: np.ndarray, rng: np.random.Generator, num_ops: int = 2, magnitude: int = 9
                 ) -> np.ndarray:
    """RandAugment (Cubuk et al., 2019): `num_ops` random PIL operations at `magnitude` (0-10) per image."""
    from PIL import Image, ImageEnhance, ImageOps

    level = magnitude / 10.0

    def signed(value: float) -> float:
        return value if rng.random() < 0.5 else -value

    def affine(img, matrix):
        return img.transform(img.size, Image.AFFINE, matrix, fillcolor=(128, 128, 128))

    ops = [
        lambda img: ImageOps.autocontrast(img),
        lambda img: ImageOps.equalize(img),
        lambda img: img.rotate(signed(30 * level), fillcolor=(128, 128, 128)),
        lambda img: ImageOps.solarize(img, int(256 - 256 * level)),
        lambda img: ImageOps.posterize(img, max(1, int(8 - 4 * level))),
        lambda img: ImageEnhance.Color(img).enhance(1 + signed(0.9 * level)),
        lambda img: ImageEnhance.Contrast(img).enhance(1 + signed(0.9 * level)),
        lambda img: ImageEnhance.Brightness(img).enhance(1 + signed(0.9 * level)),
        lambda img: ImageEnhance.Sharpness(img).enhance(1 + signed(0.9 * level)),
        lambda img: affine(img, (1, signed(0.3 * level), 0, 0, 1, 0)),
        lambda img: affine(img, (1, 0, 0, signed(0.3 * level), 1, 0)),
        lambda img: affine(img, (1, 0, signed(0.45 * level * img.size[0]), 0, 1, 0)),
        lambda img: affine(img, (1, 0, 0, 0, 1, signed(0.45 * level * img.size[1]))),
    ]
    out = np.empty_like(images)
    for i, image in enumerate(images):
        img = Image.fromarray(image)
        for op in rng.choice(len(ops), num_ops):
            img = ops[op](img)
        out[i] = np.asarray(img)
    return out


def soft_targets(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """[N] -> [N, K] label-smoothed one-hot targets."""
    targets = np.full((len(labels), num_classes), smoothing / num_classes, np.float32)
    targets[np.arange(len(labels)), labels] += 1.0 - smoothing
    return targets


def mix_batch(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator, mixup: float, cutmix: float
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Mixup or CutMix (chosen at random when both are on) of a float batch [N, 3, H, W] with its targets."""
    if mixup <= 0 and cutmix <= 0:
        return images, targets
    order = rng.permutation(len(images))
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    if use_cutmix:
        lam = rng.beta(cutmix, cutmix)
        h, w = images.shape[2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = rng.integers(h), rng.integers(w)
        y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
        x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
        images = images.copy()
        images[:, :, y0:y1, x0:x1] = images[order, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        lam = rng.beta(mixup, mixup)
        images = lam * images + (1 - lam) * images[order]
    return images.astype(np.float32), (lam * targets + (1 - lam) * targets[order]).astype(np.float32)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] with CIFAR per-channel mean/std."""
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy()


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


def batches(count: int, batch_size: int, rng: Optional[np.random.Generator], rank: int = 0, world: int = 1
            ) -> Iterator[np.ndarray]:
    """Index batches of this rank's share (shuffled when rng is given), like a distributed sampler."""
    if rng is None:  # evaluation: every image exactly once across ranks
        order = np.arange(count)[rank::world]
    else:  # training: equal shares, topped up with repeats like DistributedBatchSampler
        order = np.resize(rng.permutation(count), math.ceil(count / world) * world)[rank::world]
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


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
    if world > 1:
        total = paddle.to_tensor(confusion)
        dist.all_reduce(total)
        confusion = total.numpy()
    return confusion


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


def save_checkpoint(folder: str, model, optimizer, epoch: int, best: float, args: argparse.Namespace) -> None:
    """Model, optimizer (with its LR scheduler), epoch and best accuracy; the old checkpoint goes only once the
    new one is complete (checkpoint_io)."""
    to_structured = {p.name: n for n, p in model.named_parameters()}
    checkpoint_io.save(folder, model.state_dict(), rename_optimizer_state(optimizer.state_dict(), to_structured),
                       {"epoch": epoch, "best_top1": best, "seed": args.seed, "model": args.model, "args": vars(args)})


def resume(folder: str, model, optimizer, args: argparse.Namespace) -> Tuple[int, float]:
    """Load the newest complete checkpoint of a run into model and optimizer; (next epoch, best top-1)."""
    model_state, optimizer_state, state = checkpoint_io.load(os.path.join(folder, "last"))
    if state.get("model") != args.model:
        raise SwinInputError(f"--resume {folder}: the checkpoint is for --model {state.get('model')}, "
                             f"this run builds {args.model}")
    try:
        model.set_state_dict(model_state)
        to_internal = {n: p.name for n, p in model.named_parameters()}
        optimizer.set_state_dict(rename_optimizer_state(optimizer_state, to_internal))
        return state["epoch"] + 1, float(state.get("best_top1", 0.0))
    except (ValueError, KeyError, AssertionError, TypeError) as error:
        raise MalformedFileError(f"--resume {folder}: the checkpoint does not fit this run ({error})") from None


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Data-order and augmentation randomness of one epoch: a pure function of (seed, epoch), so a resumed
    run draws exactly what an uninterrupted one would."""
    return np.random.default_rng([seed, epoch])


# ---------------------------------------------------------------------------------------------- modes
def train(args: argparse.Namespace) -> float:
    world = dist.get_world_size()
    rank = dist.get_rank()
    if world > 1:
        dist.init_parallel_env()
    log = Logger(args.output, rank == 0)
    data = synthetic_cifar10() if args.synthetic else load_cifar10(args.data)
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    model = build_model(args)
    img_size = model.img_size[0]
    if args.pretrained:
        load_pretrained(model, args.pretrained, strict=args.strict, verbose=rank == 0)
    steps_per_epoch = math.ceil(math.ceil(len(train_y) / world) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup = int(args.warmup_epochs * steps_per_epoch)
    if warmup > total_steps // 5:
        warmup = total_steps // 5
        if rank == 0:
            print(f"note: warmup shortened to {warmup} steps (20% of this {args.epochs}-epoch run)")
    scheduler = paddle.optimizer.lr.LambdaDecay(
        args.lr, lambda step: lr_factor(step, warmup, total_steps, args.min_lr_ratio))
    optimizer = build_optimizer(model, args, scheduler)
    scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if args.amp else None

    start_epoch, best = 0, 0.0
    if args.resume:
        start_epoch, best = resume(args.resume, model, optimizer, args)
        log(f"resumed from {args.resume} after epoch {start_epoch}")
    if world > 1:
        model = paddle.DataParallel(model)
    log(f"model {args.model}: {sum(int(np.prod(p.shape)) for p in model.parameters()):,} parameters, "
        f"input {img_size}px; {len(train_y)} train / {len(test_y)} test images; {world} process(es), "
        f"{steps_per_epoch} steps per epoch")

    finished = 0
    for epoch in range(start_epoch, args.epochs):
        paddle.seed(args.seed * 1000 + epoch)  # dropout and drop path, reproducible on resume
        rng = epoch_rng(args.seed, epoch)
        model.train()
        losses, seen, tic = [], 0, time.perf_counter()
        for step, index in enumerate(batches(len(train_y), args.batch_size, rng, rank, world)):
            images = random_crop_flip(train_x[index], rng)
            if args.randaugment:
                images = rand_augment(images, rng, magnitude=args.randaugment)
            inputs, targets = mix_batch(normalize(images), soft_targets(train_y[index], 10, args.smoothing),
                                        rng, args.mixup, args.cutmix)
            with paddle.amp.auto_cast(enable=args.amp):
                logits = model(model_input(inputs, img_size))
                loss = F.cross_entropy(logits.astype("float32"), paddle.to_tensor(targets), soft_label=True)
            loss_value = float(loss)
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
            seen += len(index)
            progress(step + 1, steps_per_epoch, float(np.mean(losses)), seen / (time.perf_counter() - tic),
                     rank == 0)
        throughput = seen * world / (time.perf_counter() - tic)
        confusion = evaluate(model, test_x, test_y, img_size, args.batch_size, rank, world)
        top1 = 100.0 * np.trace(confusion) / confusion.sum()
        is_best = top1 > best
        best = max(best, top1)
        lr = optimizer.get_lr()
        log(f"epoch {epoch + 1}/{args.epochs}  train loss {np.mean(losses):.4f}  test top-1 {top1:.2f}%  "
            f"{throughput:.1f} img/s  lr {lr:.2e}")
        log.scalars(epoch + 1, train_loss=float(np.mean(losses)), test_top1=top1, throughput=throughput, lr=lr)
        if rank == 0:
            core = model._layers if isinstance(model, paddle.DataParallel) else model
            save_checkpoint(os.path.join(args.output, "last"), core, optimizer, epoch, best, args)
            if is_best:
                save_checkpoint(os.path.join(args.output, "best"), core, optimizer, epoch, best, args)
        finished += 1
        if args.stop_after and finished >= args.stop_after and epoch + 1 < args.epochs:
            log(f"stopping after {finished} epoch(s) as asked; continue with --resume {args.output}")
            break
    log(f"best test top-1: {best:.2f}%")
    log.close()
    return best


def load_weights(model, path: str) -> None:
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"--weights: no file at {path!r} (a model.pdparams written by training, "
                                "or an authors' .pth)")
    load_pretrained(model, path, strict=True, verbose=False)


def eval_only(args: argparse.Namespace) -> float:
    data = synthetic_cifar10() if args.synthetic else load_cifar10(args.data)
    model = build_model(args)
    load_weights(model, args.weights)
    confusion = evaluate(model, *data["test"], model.img_size[0], args.batch_size)
    top1 = 100.0 * np.trace(confusion) / confusion.sum()
    print(f"{'class':<12}{'images':>8}{'top-1':>9}")
    for i, name in enumerate(CLASSES):
        total = confusion[i].sum()
        print(f"{name:<12}{total:>8}{(100.0 * confusion[i, i] / total if total else float('nan')):>8.2f}%")
    print(f"test top-1: {top1:.2f}%")
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
    recipe.add_argument("--batch-size", type=positive_int, default=128, help="per process")
    recipe.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    recipe.add_argument("--lr", type=positive_float, default=1e-3, help="base LR for the whole batch")
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
