"""How a training step's images are chosen and augmented, on one process or several.

An epoch's order is a permutation drawn from (seed, epoch). Global batch k is order[k*G:(k+1)*G], where G is
processes x --batch-size, and process r takes the r-th of its equal parts. The last global batch of an epoch
is smaller (every image is used once per epoch, none twice): it is cut into parts of ceil(size / processes),
and a process whose part comes up short fills it with pads of weight 0, so that every process runs the same
steps. Each image's crop, flip and RandAugment are drawn from (seed, epoch, image index). Which images make a
step and how they are augmented thus depend on the global batch only, not on how many processes share it.
"""
import math
from typing import Iterator, NamedTuple, Optional, Tuple

import numpy as np

from cifar10 import MEAN, STD


class Part(NamedTuple):
    """One process's share of a global batch."""
    index: np.ndarray  # int64 dataset indices, pads included
    real: int  # the first `real` entries are images of the batch; the rest are pads (weight 0)
    batch: int  # images in the whole global batch

    def weights(self) -> np.ndarray:
        """float32 [len(index)]: 1 for an image of the batch, 0 for a pad."""
        return (np.arange(len(self.index)) < self.real).astype(np.float32)


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of an epoch: a pure function of (seed, epoch), so a resumed run draws what an uninterrupted
    one would."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def rank_part(batch: np.ndarray, rank: int, world: int) -> Part:
    """Process `rank`'s part of a global batch of dataset indices (see the module docstring)."""
    size = math.ceil(len(batch) / world)
    mine = np.asarray(batch[rank * size:(rank + 1) * size], np.int64)
    pads = np.full(size - len(mine), batch[0], np.int64)
    return Part(np.concatenate([mine, pads]), len(mine), len(batch))


def train_parts(count: int, per_process: int, seed: int, epoch: int, rank: int = 0, world: int = 1
                ) -> Iterator[Part]:
    """This process's part of every step of an epoch."""
    order = epoch_order(count, seed, epoch)
    step = per_process * world
    for start in range(0, count, step):
        yield rank_part(order[start:start + step], rank, world)


def batches(count: int, batch_size: int, rng: Optional[np.random.Generator], rank: int = 0, world: int = 1
            ) -> Iterator[np.ndarray]:
    """Index batches of this process: with `rng`, its parts of the global batches of rng's permutation (pads
    included); without, for evaluation, every image exactly once over all processes, none padded."""
    if rng is None:
        order = np.arange(count)[rank::world]
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]
        return
    order = rng.permutation(count)
    for start in range(0, count, batch_size * world):
        yield rank_part(order[start:start + batch_size * world], rank, world).index


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


def augment(images: np.ndarray, index: np.ndarray, seed: int, epoch: int, randaugment: int = 0) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the same, each image cropped, flipped (and RandAugmented) with draws from
    (seed, epoch, its dataset index): the same whichever process, and in whichever batch, it lands."""
    out = np.empty_like(images)
    for i, (image, key) in enumerate(zip(images, index)):
        rng = np.random.default_rng([seed, epoch, int(key)])
        view = random_crop_flip(image[None], rng)
        out[i] = rand_augment(view, rng, magnitude=randaugment)[0] if randaugment else view[0]
    return out


def mixing_rng(seed: int, epoch: int, step: int, rank: int) -> np.random.Generator:
    """Mixup / CutMix draws of one process's part of a step (they mix images within that part)."""
    return np.random.default_rng([seed, epoch, step, rank, 1])


def steps_per_epoch(count: int, global_batch: int) -> int:
    return math.ceil(count / global_batch)


def global_batch_of(state: dict) -> Tuple[int, int, int]:
    """(images per step, processes, per process) recorded in a checkpoint's state (older ones: 1 process)."""
    per_process = int(state.get("batch_size") or state.get("args", {}).get("batch_size", 0))
    processes = int(state.get("processes", 1))
    return per_process * processes, processes, per_process
