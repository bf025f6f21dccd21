"""What the command-line tools share: CPU threads, argument types, and how user errors end a run."""
import argparse
import os
import sys
import traceback
from typing import Callable, Optional, Tuple

from .errors import SwinInputError

DEBUG_ENV = "SWIN_PADDLE_DEBUG"


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_num_threads(threads: Optional[int] = None) -> int:
    """Use `threads` CPU threads for Paddle's kernels (default: all cores); returns the number set.

    Paddle 2.6 runs CPU matmuls on one thread unless told otherwise.
    """
    import paddle

    threads = max(1, int(threads or available_cores()))
    paddle.base.core.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and Paddle's generators, which drive data order, augmentation and initialisation."""
    import random

    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def cpu_tuning() -> dict:
    """The process-wide CPU settings applied when swin_backbone was imported (see _cpu_tuning.py)."""
    from . import _cpu_tuning

    return dict(_cpu_tuning.applied)


def _number(kind: type, minimum: float, inclusive: bool, maximum: Optional[float] = None) -> Callable[[str], float]:
    """An argparse type: `kind(text)` within [minimum (or above it), maximum]; a usage error otherwise."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    wanted = f"{'an integer' if kind is int else 'a number'} {bound}"
    if maximum is not None:
        wanted += f" and <= {maximum:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if value != value or (value < minimum if inclusive else value <= minimum) or (
                maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{text} is not {wanted}")
        return value

    parse.__name__ = wanted  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, True)
non_negative_int = _number(int, 0, True)
positive_float = _number(float, 0, False)
non_negative_float = _number(float, 0, True)
fraction = _number(float, 0, True, 1)


def positive_int_list(text: str) -> list:
    """An argparse type for comma-separated positive integers, e.g. "2,2,6,2"."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive integers such as 2,2,6,2")
    return values


def image_size(text: str) -> Tuple[int, int]:
    """An argparse type for "HxW" (or one number for a square), both sides positive."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size HxW with positive H and W (e.g. 224x224)")
    return sizes[0], sizes[1]


USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, SwinInputError)


def user_error(error: BaseException) -> Optional[BaseException]:
    """The user error (USER_ERRORS) that `error` is, or that a framework wrapped in a RuntimeError (PaddleSeg's
    builder re-raises whatever a component's constructor raised, a refused `pretrained` file too, as
    "Tried to create a ... object"); None for anything else."""
    while isinstance(error, RuntimeError) and not isinstance(error, USER_ERRORS):
        error = error.__cause__ or error.__context__
    return error if isinstance(error, USER_ERRORS) else None


def run_tool(main: Callable) -> None:
    """Run a command-line tool's main(): a user error (a missing or bad file, a bad value) ends as one line
    `error: ...` with exit code 1, also when a framework wrapped it. `--debug` (taken out of sys.argv here) or
    SWIN_PADDLE_DEBUG=1 shows the traceback instead."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if "--debug" in sys.argv[1:]:
        sys.argv.remove("--debug")
        debug = True
    try:
        main()
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        if debug:
            traceback.print_exc()
        message = str(cause).strip().replace("\n", "; ")
        sys.exit(f"error: {message}")
