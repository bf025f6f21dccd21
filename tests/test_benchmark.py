"""tools/benchmark.py's plumbing (not its timings): interleaved timing, crash reporting, the memory worker."""
import json
import os
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import benchmark  # noqa: E402


def test_time_interleaved_reports_medians_and_crashes(capsys):
    calls = []

    def make_step(run):
        return run

    def fine():
        calls.append("fine")

    def broken():
        raise RuntimeError("shape mismatch\nmore detail")

    times = benchmark.time_interleaved({"fine": fine, "broken": broken}, make_step, repeats=3, warmup=1,
                                       threads={"fine": 1, "broken": None})
    assert times["broken"] is None and times["fine"] >= 0.0
    assert calls == ["fine"] * 4  # one warm-up, then three timed repeats
    assert "broken crashed: RuntimeError: shape mismatch" in capsys.readouterr().out


def test_memory_worker_reports_allocator_and_process_memory():
    command = [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--memory-worker", "1",
               "--memory-size", "64", "--threads", "1"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    report = json.loads(output.strip().splitlines()[-1])
    assert report["step_mb"] > 0 and report["seconds"] > 0
    assert report["peak_rss_mb"] >= report["step_rss_mb"] >= 0
