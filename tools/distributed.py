"""What the training tools share on several processes (`python -m paddle.distributed.launch ...`).

One process per GPU (or per CPU slot), one machine or several: every process runs the same script, and
PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM say which it is. This module starts the collective group, checks
before the first step that every process was started alike (same command, config and data: a difference
is one line naming the process, the machine and what differs, on every process instead of a hang), and
derives the random streams each process draws from.
"""
import json
import os
import random
import socket
import zlib
from typing import Callable, Dict, List, NamedTuple, Optional

import numpy as np
import paddle
import paddle.distributed as dist

from swin_backbone.errors import SwinInputError

SAME_EVERYWHERE = ("start every process with the same command, config and data (on several machines: the same "
                   "files at the same paths on each)")


class Group(NamedTuple):
    rank: int
    world: int
    host: str

    @property
    def writer(self) -> bool:
        """Only rank 0 writes checkpoints, logs and VisualDL records."""
        return self.rank == 0


def group() -> Group:
    """This process's place, from the launcher's environment (1 process when started without it)."""
    return Group(int(os.environ.get("PADDLE_TRAINER_ID", 0)), int(os.environ.get("PADDLE_TRAINERS_NUM", 1)),
                 socket.gethostname())


def start() -> Group:
    """Join the collective group when there is more than one process; returns this process's place."""
    place = group()
    if place.world > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    return place


def gather_text(text: str) -> List[str]:
    """Every process's `text`, in rank order, on every process (UTF-8 bytes in tensors; no pickle)."""
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    gathered: List[paddle.Tensor] = []
    dist.all_gather(gathered, paddle.to_tensor([len(data)], "int64"))
    lengths = [int(length.numpy().reshape(-1)[0]) for length in gathered]  # int() of a 1-D tensor fails on 3.x
    padded = np.zeros(max(max(lengths), 1), np.int32)
    padded[:len(data)] = data
    parts: List[paddle.Tensor] = []
    dist.all_gather(parts, paddle.to_tensor(padded))
    return [part.numpy()[:length].astype(np.uint8).tobytes().decode("utf-8") for part, length in zip(parts, lengths)]


def digest(value) -> str:
    """A short fingerprint of a setting (its JSON text; objects by their attributes)."""
    text = json.dumps(value, sort_keys=True, default=lambda o: vars(o) if hasattr(o, "__dict__") else str(o))
    return f"{zlib.crc32(text.encode()):08x}{len(text):x}"


def agree(place: Group, settings: Callable[[], Dict[str, object]], error: Optional[BaseException] = None) -> None:
    """Check, before training starts, that no process failed its set-up and that all have the same `settings()`.

    `error` is this process's set-up failure (a missing data folder, say). With one process it is raised as it
    is; with several, every process learns of the first failure and ends with one line naming the rank and
    the machine, so the launcher stops them all instead of leaving the others waiting at the first step.
    `settings` is called only with several processes and no error: its fingerprints read whole data sets.
    """
    if place.world == 1:
        if error is not None:
            raise error
        return
    settings_here = {}
    if error is None:
        try:
            settings_here = settings()
        except (FileNotFoundError, SwinInputError) as caught:
            error = caught
    mine = {"host": place.host, "error": str(error).strip() if error is not None else None,
            "settings": {name: digest(value) for name, value in settings_here.items()}}
    everyone = [json.loads(text) for text in gather_text(json.dumps(mine))]
    for rank, report in enumerate(everyone):
        if report["error"]:
            if rank == place.rank:
                raise error
            raise SwinInputError(f"rank {rank} (on {report['host']}) could not start: {report['error']}")
    reference = everyone[0]["settings"]
    for rank, report in enumerate(everyone[1:], 1):
        for name in sorted(set(reference) | set(report["settings"])):
            if report["settings"].get(name) != reference.get(name):
                mine = settings_here.get(name)
                here = f" (here: {mine!r})" if place.rank in (0, rank) and _short(mine) else ""
                raise SwinInputError(f"rank {rank} (on {report['host']}) has another {name} than rank 0 "
                                     f"(on {everyone[0]['host']}){here}: {SAME_EVERYWHERE}")


def _short(value) -> bool:
    return isinstance(value, (int, float, str, bool, type(None))) and len(str(value)) <= 80


def stream_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for the stream named by (seed, *keys): different keys give independent streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def seed_data_streams(seed: int, rank: int) -> None:
    """Seed Python's and NumPy's generators, which the frameworks' data augmentation draws from, per process.

    Each rank draws its own augmentation, never a copy of another rank's. Call it before the data loader is
    made: PaddleDetection's starts reading (and augmenting) in a thread as soon as it exists.
    """
    value = stream_seed(seed, 1, rank)
    random.seed(value)
    np.random.seed(value)


def seed_model_stream(seed: int, rank: int) -> None:
    """Seed Paddle's generator per process once the model is initialised (from `seed`, the same everywhere):
    dropout, drop path and the heads' random sampling then differ between ranks."""
    paddle.seed(stream_seed(seed, 2, rank))


def all_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over every process (the array itself with one process)."""
    if dist.get_world_size() < 2:
        return values
    total = paddle.to_tensor(values)
    dist.all_reduce(total)
    return total.numpy()


# Options that name places on one machine (data, output, weights): machines may differ there.
LOCAL_KEYS = ("dataset_dir", "dataset_root", "save_dir", "output_eval", "weights", "pretrain_weights", "pretrained",
              "vdl_log_dir")


def config_settings(path: str, overrides: Dict[str, object], base_key: str) -> Dict[str, object]:
    """A config's files (it and its bases, by their text) and its overrides other than places on one machine."""
    import yaml

    settings: Dict[str, object] = {}
    pending = [path]
    while pending:
        current = pending.pop()
        with open(current, encoding="utf-8") as handle:
            text = handle.read()
        settings[f"config file {os.path.basename(current)}"] = text
        bases = (yaml.safe_load(text.replace("!", "#!")) or {}).get(base_key) or []  # ignore ppdet's !tags
        for base in [bases] if isinstance(bases, str) else bases:
            pending.append(os.path.join(os.path.dirname(current), base))
    for key, value in flatten(overrides).items():
        if key.split(".")[-1] not in LOCAL_KEYS:
            settings[f"option {key}"] = value
    return settings


def without_local(value):
    """A (nested) config without the places on one machine (LOCAL_KEYS)."""
    if isinstance(value, dict):
        return {k: without_local(v) for k, v in value.items() if str(k) not in LOCAL_KEYS}
    if isinstance(value, (list, tuple)):
        return [without_local(v) for v in value]
    return value


def flatten(options: Dict[str, object], prefix: str = "") -> Dict[str, object]:
    """{"TrainDataset": {"dataset_dir": x}} -> {"TrainDataset.dataset_dir": x}."""
    flat: Dict[str, object] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def file_fingerprint(path: str) -> str:
    """crc32 and size of a file (an annotation file, say)."""
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x} ({os.path.getsize(path)} bytes)"


def folder_fingerprint(folder: str) -> str:
    """The names and sizes of the files under a folder (image and label folders: reading them all is slow)."""
    entries = sorted(f"{os.path.relpath(os.path.join(root, name), folder)}:{os.path.getsize(os.path.join(root, name))}"
                     for root, _, names in os.walk(folder) for name in names)
    return f"{zlib.crc32(chr(10).join(entries).encode()):08x} ({len(entries)} files)"
