"""`python -m paddle.distributed.launch`, with one check first: on several machines, that the --master port is
free on the machine that is to serve it. Paddle 2.6's launcher, given a port some other program holds,
waits for its peers without end ("Waiting peer start..."); this ends with one line instead.

    python tools/launch.py --master 10.0.0.1:8090 --nnodes 2 --rank 0 --gpus 0,1,2,3,4,5,6,7 tools/det_train.py -c ...

Every argument goes to paddle.distributed.launch unchanged.
"""
import errno
import os
import socket
import sys
from typing import Optional, Sequence, Tuple


def option(argv: Sequence[str], name: str) -> Optional[str]:
    """The value of a launcher option (`--name value` or `--name=value`) before the training script (every
    option of the launcher takes a value)."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        arg = argv[index]
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
        index += 1 if "=" in arg else 2
    return None  # not given before the training script, whose own arguments follow


def master_address(argv: Sequence[str]) -> Optional[Tuple[str, int]]:
    """(host, port) of --master when this launcher is to serve it: several machines, and rank 0 or unset."""
    master, nnodes, rank = option(argv, "--master"), option(argv, "--nnodes") or "1", option(argv, "--rank")
    if not master or ":" not in master or nnodes.split(":")[0] == "1" or rank not in (None, "0"):
        return None
    host, _, port = master.rpartition(":")
    return (host, int(port)) if port.isdigit() else None


def port_in_use(host: str, port: int) -> bool:
    """Whether another program holds `port` on this machine's address `host` (False if `host` is not ours)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def main(argv: Sequence[str]) -> None:
    address = master_address(argv)
    if address and port_in_use(*address):
        sys.exit(f"error: port {address[1]} on {address[0]} (--master) is in use by another program or run: choose a "
                 "free port and pass the same --master to every machine")
    os.execv(sys.executable, [sys.executable, "-m", "paddle.distributed.launch", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
