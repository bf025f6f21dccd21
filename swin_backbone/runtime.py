"""What the command-line tools share: CPU threads and how user errors end a run."""
import os
import sys
from typing import Callable, Optional, Tuple, Type


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


def cpu_tuning() -> dict:
    """The process-wide CPU settings applied when swin_backbone was imported (see _cpu_tuning.py)."""
    from . import _cpu_tuning

    return dict(_cpu_tuning.applied)


def run_tool(main: Callable, user_errors: Tuple[Type[BaseException], ...] = (FileNotFoundError,)) -> None:
    """Run a command-line tool's main(); a user error (e.g. a missing file) ends with one line, no traceback."""
    try:
        main()
    except user_errors as error:
        sys.exit(f"error: {error}")
