"""Process-level settings the tools share: CPU threads and the flag PaddleDetection 2.6 needs."""
import os
import sys
from typing import Callable, Optional, Tuple, Type


def set_num_threads(threads: Optional[int] = None) -> int:
    """Use `threads` CPU threads for Paddle's kernels (default: all cores); returns the number set.

    Paddle 2.6 runs CPU matmuls on one thread unless told otherwise.
    """
    import paddle

    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, int(threads))
    paddle.base.core.set_num_threads(threads)
    return threads


def run_tool(main: Callable, user_errors: Tuple[Type[BaseException], ...] = (FileNotFoundError,)) -> None:
    """Run a command-line tool's main(); a user error (e.g. a missing file) ends with one line, no traceback."""
    try:
        main()
    except user_errors as error:
        sys.exit(f"error: {error}")
