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
from typing import Dict, List, NamedTuple, Optional

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
    lengths: List[paddle.Tensor] = []
    dist.all_gather(lengths, paddle.to_tensor([len(data)], "int64"))
    longest = max(int(length) for length in lengths)
    padded = np.zeros(max(longest, 1), np.int32)  # int32: gloo's all_gather of uint8 is not reliable everywhere
    padded[:len(data)] = data
    parts: List[paddle.Tensor] = []
    dist.all_gather(parts, paddle.to_tensor(padded))
    return [part.numpy()[:int(length)].astype(np.uint8).tobytes().decode("utf-8")
            for part, length in zip(parts, lengths)]


def digest(value) -> str:
    """A short fingerprint of a setting (its JSON text; objects by their attributes)."""
    text = json.dumps(value, sort_keys=True, default=lambda o: vars(o) if hasattr(o, "__dict__") else str(o))
    return f"{zlib.crc32(text.encode()):08x}{len(text):x}"


def agree(place: Group, settings: Dict[str, object], error: Optional[BaseException] = None) -> None:
    """Check, before training starts, that no process failed its set-up and that all have the same `settings`.

    `error` is this process's set-up failure (a missing data folder, say). With one process it is raised as it
    is; with several, every process learns of the first failure and ends with one line naming the rank and
    the machine, so the launcher stops them all instead of leaving the others waiting at the first step.
    """
    if place.world == 1:
        if error is not None:
            raise error
        return
    mine = {"host": place.host, "error": str(error).strip() if error is not None else None,
            "settings": {name: digest(value) for name, value in settings.items()}}
    everyone = [json.loads(text) for text in gather_text(json.dumps(mine))]
    for rank, report in enumerate(everyone):
        if report["error"]:
            if rank == place.rank:
                raise error
            raise SwinInputError(f"rank {rank} (on {report['host']}) could not start: {report['error']}")
    reference = everyone[0]["settings"]
    for rank, report in enumerate(everyone[1:], 1):
        for name in reference:
            if report["settings"].get(name) != reference[name]:
                here = f" (here: {settings[name]!r})" if place.rank in (0, rank) and _short(settings[name]) else ""
                raise SwinInputError(f"rank {rank} (on {report['host']}) has another {name} than rank 0 "
                                     f"(on {everyone[0]['host']}){here}: {SAME_EVERYWHERE}")


def _short(value) -> bool:
    return isinstance(value, (int, float, str, bool, type(None))) and len(str(value)) <= 80


def stream_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for the stream named by (seed, *keys): different keys give independent streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def seed_process_streams(seed: int, rank: int) -> None:
    """Seed Python's, NumPy's and Paddle's generators for this process's data augmentation and dropout.

    Called after the model is built (its initialisation draws from `seed` itself, the same on every
    process): each rank then draws its own augmentation and dropout, never a copy of another rank's.
    """
    value = stream_seed(seed, 1, rank)
    random.seed(value)
    np.random.seed(value)
    paddle.seed(value)


def all_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over every process (the array itself with one process)."""
    if dist.get_world_size() < 2:
        return values
    total = paddle.to_tensor(values)
    dist.all_reduce(total)
    return total.numpy()
