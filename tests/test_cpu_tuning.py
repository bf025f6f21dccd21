"""The process-wide CPU settings applied at import: which MKL code path, and that they are in effect."""
import json
import os
import subprocess
import sys

from conftest import ROOT
from swin_backbone import _cpu_tuning

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


# Imports swin_backbone as a process would, on a machine whose /proc/cpuinfo says `cpuinfo`; then allocates
# 64 MB with malloc and prints MKL_DEBUG_CPU_TYPE, what cpu_tuning() reports, and how many bytes glibc mmapped.
PROBE = r"""
import builtins, ctypes, json, os, sys
sys.path.insert(0, {root!r})
real_open = builtins.open
fake = {cpuinfo!r}
builtins.open = lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path, *a, **k)
import swin_backbone
builtins.open = real_open


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 * 2 ** 20)
mmapped = libc.mallinfo2().hblkhd - before
libc.free(ctypes.c_void_p(block))
print(json.dumps({{"env": os.environ.get("MKL_DEBUG_CPU_TYPE"), "applied": swin_backbone.runtime.cpu_tuning(),
                  "mmapped": mmapped}}))
"""


def probe(tmp_path, vendor: str, flags: str, **env) -> dict:
    cpuinfo = tmp_path / f"cpuinfo-{vendor}"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "SWIN_PADDLE_CPU_TUNING")}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(root=ROOT, cpuinfo=str(cpuinfo))], cwd=ROOT,
                          capture_output=True, text=True, env=dict(clean, **env), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_settings_take_effect_at_import_and_can_be_turned_off(tmp_path):
    """On an AMD CPU with AVX-512 the import sets MKL_DEBUG_CPU_TYPE=7 (before Paddle's first matmul) and glibc
    serves a 64 MB block from its heap instead of a fresh mmap; SWIN_PADDLE_CPU_TUNING=0 leaves both alone; a
    value the user set is kept."""
    amd_avx512 = " ".join(sorted(AVX512))
    on = probe(tmp_path, "AuthenticAMD", amd_avx512)
    assert on["env"] == "7" and on["applied"] == {"mkl_cpu_type": "7", "malloc": True}, on
    assert on["mmapped"] == 0, on
    off = probe(tmp_path, "AuthenticAMD", amd_avx512, SWIN_PADDLE_CPU_TUNING="0")
    assert off["env"] is None and off["applied"] == {"mkl_cpu_type": None, "malloc": False}, off
    assert off["mmapped"] >= 64 * 2 ** 20, off
    kept = probe(tmp_path, "AuthenticAMD", amd_avx512, MKL_DEBUG_CPU_TYPE="4")
    assert kept["env"] == "4" and kept["applied"]["mkl_cpu_type"] == "4", kept  # a user's own choice is kept
