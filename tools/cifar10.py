"""CIFAR-10 in its official python format: read it (through the safe reader), write it, or make a small
learnable stand-in. Nothing is downloaded."""
import io
import os
import pickle
import tarfile
import zlib
from typing import Dict, Sequence, Tuple

import numpy as np

from swin_backbone.errors import MalformedFileError
from swin_backbone.safe_load import unpickle_bytes

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
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def fingerprint(data: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> str:
    """A checksum of every image and label, to check that all processes of a run read the same set."""
    crc = 0
    for split in sorted(data):
        for array in data[split]:
            crc = zlib.crc32(np.ascontiguousarray(array).data, crc)
    return f"{crc:08x} ({len(data['train'][1])} train / {len(data['test'][1])} test images)"
