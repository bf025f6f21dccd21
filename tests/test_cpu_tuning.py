"""The process-wide CPU settings applied at import: which MKL code path, and that they are in effect."""
import os
import subprocess
import sys

from conftest import ROOT
from swin_backbone import _cpu_tuning
from swin_backbone.runtime import cpu_tuning

AVX512 = {"avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def test_mkl_cpu_type_by_vendor_and_features():
    assert _cpu_tuning.mkl_cpu_type("AuthenticAMD", AVX512) == "7"
    assert _cpu_tuning.mkl_cpu_type("AuthenticAMD", {"avx", "avx2", "fma"}) == "5"
    assert _cpu_tuning.mkl_cpu_type("HygonGenuine", {"avx", "avx2", "fma"}) == "5"
    assert _cpu_tuning.mkl_cpu_type("AuthenticAMD", {"sse4_2", "avx"}) is None  # no AVX2: MKL's own choice
    assert _cpu_tuning.mkl_cpu_type("GenuineIntel", AVX512) is None  # MKL already picks Intel's best path
    assert _cpu_tuning.mkl_cpu_type("", AVX512) is None  # unknown CPU


def test_cpu_info_reads_vendor_and_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nflags\t\t: fpu avx2 fma\n")
    assert _cpu_tuning._cpu_info(str(info)) == ("AuthenticAMD", {"fpu", "avx2", "fma"})
    assert _cpu_tuning._cpu_info(str(tmp_path / "missing")) == ("", set())


def test_settings_are_in_effect_and_can_be_turned_off():
    applied = cpu_tuning()
    vendor, flags = _cpu_tuning._cpu_info()
    assert applied["mkl_cpu_type"] == os.environ.get("MKL_DEBUG_CPU_TYPE")
    if "MKL_DEBUG_CPU_TYPE" not in os.environ:
        assert _cpu_tuning.mkl_cpu_type(vendor, flags) is None
    assert applied["malloc"] is sys.platform.startswith("linux")
    probe = "import os, swin_backbone.runtime as r; print(r.cpu_tuning(), os.environ.get('MKL_DEBUG_CPU_TYPE'))"
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    off = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=dict(env, SWIN_PADDLE_CPU_TUNING="0")).stdout.strip()
    assert off == "{'mkl_cpu_type': None, 'malloc': False} None"
    kept = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                          env=dict(env, MKL_DEBUG_CPU_TYPE="4")).stdout.strip()
    assert kept.endswith("4") and "'mkl_cpu_type': '4'" in kept  # a user's own choice is kept
