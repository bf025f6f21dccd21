"""Run a tool on several CPU processes with Paddle's launcher, as users run it on GPUs, without ever hanging CI:
a free port per run, a timeout, and the launcher's whole process group killed at the end."""
import os
import re
import signal
import socket
import subprocess
import sys
from typing import Dict, List, NamedTuple, Sequence

from conftest import ROOT

TOOLS = os.path.join(ROOT, "tools")


class Run(NamedTuple):
    returncode: int
    output: str  # the launcher's console: rank 0's output and the launcher's own lines
    logs: Dict[int, str]  # each process's log (the launcher's log_dir/workerlog.N), by local rank

    def text(self) -> str:
        return self.output + "".join(self.logs.values())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDLE_", "FLAGS_selected"))}
    return env


def _collect(procs, log_dirs: Sequence[str], timeout: float) -> List[Run]:
    runs = []
    try:
        for proc in procs:
            proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:  # the launcher and its workers share a process group of their own
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0]
            runs.append((proc.returncode, output))
    result = []
    for (code, output), log_dir in zip(runs, log_dirs):
        logs = {}
        for name in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
            match = re.fullmatch(r"workerlog\.(\d+)", name)
            if match:
                with open(os.path.join(log_dir, name), errors="replace") as handle:
                    logs[int(match.group(1))] = handle.read()
        result.append(Run(code, output, logs))
    return result


def _start(script: str, args: Sequence[str], log_dir: str, launcher: Sequence[str], wrapper: bool = False
           ) -> subprocess.Popen:
    start = [os.path.join(TOOLS, "launch.py")] if wrapper else ["-m", "paddle.distributed.launch"]
    command = [sys.executable, *start, *launcher, "--log_dir", log_dir, os.path.join(TOOLS, script), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=_environment(), start_new_session=True)


def launch(script: str, args: Sequence[str], log_dir: str, processes: int = 2, timeout: float = 600) -> Run:
    """`python -m paddle.distributed.launch --nproc_per_node N tools/SCRIPT ARGS` (the README's CPU command)."""
    proc = _start(script, args, log_dir, ["--nproc_per_node", str(processes)])
    return _collect([proc], [log_dir], timeout)[0]


def launch_machines(script: str, args_per_machine: Sequence[Sequence[str]], log_dir: str,
                    timeout: float = 600) -> List[Run]:
    """The README's several-machine command, machines played by launchers on this one: each started with
    `tools/launch.py --master 127.0.0.1:PORT --nnodes N --rank I --nproc_per_node 1` and its own arguments."""
    master = f"127.0.0.1:{free_port()}"
    procs, dirs = [], []
    for index, args in enumerate(args_per_machine):
        dirs.append(os.path.join(log_dir, f"machine{index}"))
        procs.append(_start(script, args, dirs[-1], ["--master", master, "--nnodes", str(len(args_per_machine)),
                                                     "--nproc_per_node", "1", "--rank", str(index)], wrapper=True))
    return _collect(procs, dirs, timeout)


def run_tool(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """One process, without the launcher."""
    return subprocess.run([sys.executable, os.path.join(TOOLS, script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=_environment())
