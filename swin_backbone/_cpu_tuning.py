"""Two process-wide CPU settings that Paddle 2.6 leaves at slow defaults, applied when the package is imported.

1. MKL's code path on non-Intel CPUs. The MKL in Paddle's CPU wheel (libmklml) picks its kernels by CPU
   vendor, not features: on AMD it runs the generic SSE path. MKL_DEBUG_CPU_TYPE selects AVX2 (5) or
   AVX-512 (7). Measured on an AMD EPYC (2 threads): a [25088, 384] x [384, 96] matmul 58 -> 138 GFLOP/s.
   MKL reads the variable at its first BLAS call, so this works after `import paddle` as long as no
   matmul has run yet. A value already in the environment is kept; Intel CPUs are left alone.

2. glibc's malloc for large blocks. Paddle's CPU allocator takes every tensor from malloc, and glibc
   serves blocks above its mmap threshold with a fresh mmap that is unmapped on free, so each large
   tensor pays a page fault per 4 KiB on first write: a 29 MB gather took 18 ms, of which 16 ms were
   7,057 page faults. Keeping large blocks on the heap and not trimming it lets freed memory be reused
   (the same 29 MB gather: 1.8 ms). The cost: freed memory stays with the process for reuse, as with
   any caching allocator.

Set SWIN_PADDLE_CPU_TUNING=0 to leave both alone.
"""
import ctypes
import os
import sys
from typing import Optional, Tuple

_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)


def _cpu_info(path: str = "/proc/cpuinfo") -> Tuple[str, set]:
    """(vendor, flags) of the first CPU listed, or ("", set()) where unknown."""
    vendor, flags = "", set()
    try:
        with open(path) as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id":
                    vendor = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return vendor, flags


def cpu_features(path: str = "/proc/cpuinfo") -> dict:
    """This CPU's model name and the vector features deployment depends on: AVX-512, AVX512-BF16, AMX (bf16)."""
    model = ""
    try:
        with open(path) as info:
            model = next((line.partition(":")[2].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    vendor, flags = _cpu_info(path)
    return {"model": model, "vendor": vendor, "avx512": _AVX512 <= flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags}


def mkl_cpu_type(vendor: str, flags: set) -> Optional[str]:
    """The MKL_DEBUG_CPU_TYPE that unlocks this CPU's vector units, or None to leave MKL's choice."""
    if not vendor or vendor == "GenuineIntel":
        return None
    if _AVX512 <= flags:
        return "7"
    if {"avx2", "fma"} <= flags:
        return "5"
    return None


def tune_mkl() -> Optional[str]:
    """Set MKL_DEBUG_CPU_TYPE for a non-Intel x86 CPU unless already set; returns the value in effect."""
    if "MKL_DEBUG_CPU_TYPE" not in os.environ:
        cpu_type = mkl_cpu_type(*_cpu_info())
        if cpu_type is not None:
            os.environ["MKL_DEBUG_CPU_TYPE"] = cpu_type
    return os.environ.get("MKL_DEBUG_CPU_TYPE")


def tune_malloc() -> bool:
    """Keep large blocks on glibc's heap and stop trimming it; True where applied (Linux with glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def apply() -> dict:
    """Apply both settings unless SWIN_PADDLE_CPU_TUNING=0; returns what was done."""
    if os.environ.get("SWIN_PADDLE_CPU_TUNING", "1") == "0":
        return {"mkl_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE"), "malloc": False}
    return {"mkl_cpu_type": tune_mkl(), "malloc": tune_malloc()}


applied = apply()
