"""tools/benchmark.py's plumbing (not its timings): interleaved timing, crash reporting, the memory worker."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import benchmark  # noqa: E402


def test_time_interleaved_reports_medians_and_crashes(capsys):
    durations = iter([0.0, 0.05, 0.6, 0.1])  # a warm-up, then three timed repeats: median 0.1 s, mean 0.25 s
    calls = []

    def make_step(run):
        return run

    def fine():
        calls.append("fine")
        time.sleep(next(durations))

    def broken():
        raise RuntimeError("shape mismatch\nmore detail")

    times = benchmark.time_interleaved({"fine": fine, "broken": broken}, make_step, repeats=3, warmup=1,
                                       threads={"fine": 1, "broken": None})
    assert times["broken"] is None and 0.1 <= times["fine"] < 0.2, times
    assert calls == ["fine"] * 4  # one warm-up, then three timed repeats
    assert "broken crashed: RuntimeError: shape mismatch" in capsys.readouterr().out


# The memory worker exactly as `benchmark.py` runs it (its command line, a fresh process), on a small Swin.
MEMORY_WORKER = """
import runpy, sys
sys.path.insert(0, {root!r})
import swin_backbone
from swin_backbone import SwinTransformer
swin_backbone.create_backbone = lambda name, **kwargs: SwinTransformer(
    embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), **kwargs)
sys.argv = ["benchmark.py", "--memory-worker", "{flag}", "--memory-size", "256", "--threads", "1"]
runpy.run_path({script!r}, run_name="__main__")
"""


def test_memory_worker_measures_what_use_checkpoint_saves():
    """The README's memory figures come from this worker: the allocator peak of a training step drops with
    use_checkpoint (measured: 55 MB -> 21 MB, 0.39x; the README's Swin-T at 512: 0.35x)."""
    reports = {}
    for flag in (0, 1):
        code = MEMORY_WORKER.format(root=ROOT, flag=flag, script=os.path.join(ROOT, "tools", "benchmark.py"))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports[flag] = json.loads(proc.stdout.strip().splitlines()[-1])
    without, with_checkpoint = reports[0], reports[1]
    assert without["step_mb"] > 5 and with_checkpoint["step_mb"] < 0.5 * without["step_mb"], reports
    for report in reports.values():
        assert report["seconds"] > 0 and report["peak_rss_mb"] >= report["step_rss_mb"] > 0, report


PEERS = """
import json, sys
sys.path.insert(0, {tools!r})
import benchmark
contenders = benchmark.build_contenders()
agree = benchmark.check_agreement(contenders)
weight = contenders["paddleseg"].model.layers[2].blocks[3].mlp.fc1.weight
weight.set_value(weight.numpy() * 1.01)  # one weight of one peer off by 1%
print(json.dumps({{"agree": agree, "one_off": benchmark.check_agreement(contenders)}}))
"""


@pytest.mark.plugins
def test_peers_get_our_weights_and_their_outputs_are_compared():
    """The benchmark's contenders hold the same Swin-T weights: PaddleDetection's and PaddleSeg's backbones give
    our outputs (README: max difference 0), and the check sees a peer whose weights are off."""
    proc = subprocess.run([sys.executable, "-c", PEERS.format(tools=os.path.join(ROOT, "tools"))], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["agree"]) == {"paddledet", "paddleseg"} and max(result["agree"].values()) <= 1e-5, result
    assert result["one_off"]["paddledet"] == result["agree"]["paddledet"] and result["one_off"]["paddleseg"] > 1e-3
