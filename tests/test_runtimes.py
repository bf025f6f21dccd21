"""tools/runtimes.py: the runtimes and precisions infer.py and benchmark.py share, and when bf16 is refused.

Tests that need OpenVINO are in test_openvino.py; these need Paddle and onnxruntime only.
"""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, SMALL

sys.path.insert(0, os.path.join(ROOT, "tools"))
import export  # noqa: E402
import runtimes  # noqa: E402

from swin_backbone import SwinClassifier  # noqa: E402
from swin_backbone._cpu_tuning import cpu_features  # noqa: E402

AMX = {"model": "Intel Xeon", "vendor": "GenuineIntel", "avx512": True, "avx512_bf16": True, "amx_bf16": True}
EPYC = {"model": "AMD EPYC 7B13", "vendor": "AuthenticAMD", "avx512": False, "avx512_bf16": False, "amx_bf16": False}
HERE_BF16 = runtimes.cpu_has_bf16()


def test_cpu_features_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                    "flags\t\t: fpu avx512f avx512cd avx512bw avx512dq avx512vl avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_features(str(info)) == {"model": "Intel(R) Xeon(R) Platinum 8480+", "vendor": "GenuineIntel",
                                       "avx512": True, "avx512_bf16": True, "amx_bf16": True}
    info.write_text("vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n")
    assert cpu_features(str(info)) == EPYC
    assert cpu_features(str(tmp_path / "missing"))["model"] == ""


def test_bf16_needs_amx_or_avx512_bf16_and_not_onnxruntime():
    assert runtimes.bf16_refusal("openvino", AMX) is None and runtimes.bf16_refusal("paddle", AMX) is None
    assert runtimes.bf16_refusal("paddle", dict(AMX, amx_bf16=False)) is None  # AVX512-BF16 alone (Cooper Lake)
    refusal = runtimes.bf16_refusal("openvino", EPYC)
    assert refusal == ("--precision bf16 needs a CPU with AMX or AVX512-BF16; this one has neither: AMD EPYC 7B13 "
                       "(AVX-512 no, AVX512-BF16 no, AMX no)")
    assert "no bf16 kernels" in runtimes.bf16_refusal("onnxruntime", AMX)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("cls"))
    paddle.seed(11)
    args = dict(SMALL, img_size=224, window_size=7, num_classes=10)
    model, twin = SwinClassifier(**args), SwinClassifier(**args)
    twin.set_state_dict(model.state_dict())
    twin.eval()
    export.export_onnx(export.export_static(model, folder, ["logits"]), [(1, 3, 64, 64)])
    return twin, folder


@pytest.mark.parametrize("runtime", ["paddle", "onnxruntime"])
def test_runners_match_eager_at_odd_sizes(classifier, runtime):
    twin, folder = classifier
    runner = runtimes.create(runtime, folder, "fp32", threads=2)
    assert runner.output_names == ["logits"]
    for batch, height, width in [(1, 97, 131), (3, 64, 45)]:
        x = np.random.rand(batch, 3, height, width).astype("float32")
        with paddle.no_grad():
            want = twin(paddle.to_tensor(x)).numpy()
        got = runner(x)
        assert runtimes.max_difference(got, [want])["max_abs"] <= 1e-4


def test_max_difference_counts_labels_apart_from_values():
    labels = np.array([[1, 2], [3, 4]], "int32")
    diff = runtimes.max_difference([np.array([0.5, 1.0], "float32"), labels + (labels == 4)],
                                   [np.array([0.5, 1.25], "float32"), labels])
    assert diff == {"max_abs": 0.25, "mismatch": 0.25}


def run_infer(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "infer.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_infer_times_and_checks_paddle_bf16_or_refuses_it(classifier):
    """Paddle Inference's oneDNN bf16 on a CPU with AMX or AVX512-BF16: a time per batch and a difference from fp32
    that is bf16-sized (not 0: it really ran in bf16). On a CPU without them: the one-line refusal."""
    proc = run_infer("--model-dir", classifier[1], "--precision", "bf16", "--batch", "2", "--size", "61x83",
                     "--repeats", "1", "--check")
    if not HERE_BF16:  # e.g. the AMD EPYC CI machines: the refusal is the behaviour to check there
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith("error: --precision bf16 needs a CPU with AMX or AVX")
        return
    if not paddle.__version__.startswith("2."):  # Paddle 3.3.1's oneDNN bf16 crashes on Swin exports: refused
        assert proc.returncode == 1 and "oneDNN bf16 mode fails on Swin exports" in proc.stderr, proc.stderr[-2000:]
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "paddle bf16:" in proc.stdout and "ms per batch" in proc.stdout and "AVX512-BF16 yes" in proc.stdout
    diff = float(proc.stdout.split("max abs difference ")[1].split()[0].rstrip(","))
    assert 0 < diff < 0.1, proc.stdout


def test_infer_switches_for_runtimes(classifier, tmp_path):
    proc = run_infer("--model-dir", classifier[1], "--runtime", "onnxruntime", "--precision", "bf16")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(
        "error: --precision bf16: onnxruntime's CPU provider has no bf16 kernels")
    proc = run_infer("--model-dir", classifier[1], "--runtime", "onnxruntime", "--batch", "2", "--size", "50x70",
                     "--repeats", "1", "--check")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.split("max abs difference ")[1].split()[0]) <= 1e-4
    proc = run_infer("--model-dir", str(tmp_path), "--runtime", "onnxruntime")
    assert proc.returncode == 1 and "no model.onnx in" in proc.stderr and "--onnx" in proc.stderr
    proc = run_infer("--model-dir", classifier[1], "--runtime", "openvino", "--gpu")
    assert proc.returncode == 2 and "Paddle Inference switches" in proc.stderr


def test_benchmark_deployment_table_and_goal():
    """benchmark.py's README rows and goal line from measured rows (its plumbing, not its timings)."""
    import benchmark

    rows = [{"model": "Swin-T classifier", "input": "8x3x224x224", "path": path, "seconds": seconds,
             "img_per_s": 8 / seconds, "ratio": 0.5 / seconds, "max_abs": diff, "mismatch": 0.0}
            for path, seconds, diff in (("paddle fp32", 0.5, 0.0), ("openvino fp32 (pdmodel)", 0.4, 1e-6),
                                        ("openvino bf16 (pdmodel)", 0.125, 8e-3))]
    rows.append({"model": "UperNet Swin-T", "input": "1x3x512x512", "path": "openvino bf16 (onnx)", "seconds": None,
                 "img_per_s": None, "ratio": None, "max_abs": 0.0, "mismatch": 0.0125})
    table = benchmark.deployment_table(rows).splitlines()
    assert table[0].startswith("| model, input | runtime, precision | seconds | img/s | vs Paddle Inference fp32")
    assert table[2] == "| Swin-T classifier 8x3x224x224 | paddle fp32 | 0.500 | 16.00 | 1.00x | (reference) |"
    assert table[4] == ("| Swin-T classifier 8x3x224x224 | openvino bf16 (pdmodel) | 0.125 | 64.00 | 4.00x "
                        "| max abs diff 8.0e-03 |")
    assert table[5] == "| UperNet Swin-T 1x3x512x512 | openvino bf16 (onnx) | crash | - | - | 1.250% of labels differ |"
    assert benchmark.deployment_goal(rows) == ("Swin-T classifier 8x3x224x224: fastest openvino bf16 (pdmodel) 4.00x "
                                               "Paddle Inference fp32; fastest fp32 openvino fp32 (pdmodel) 1.25x")
