"""libz.so.1 stays whole with paddle imported before or after swin_backbone (see swin_backbone/_load_order.py).

Each case runs in a fresh interpreter: this one already has libz loaded, so the clash cannot show here.
"""
import subprocess
import sys

import paddle
import pytest

from conftest import ROOT

# Paddle 2.6's libpaddle.so exports a static zlib that libz.so.1 binds to when paddle comes first; Paddle 3's
# neither exports zlib nor needs libz.so.1, so there is nothing to repair ("ok").
REPAIRED = "repaired" if paddle.__version__.startswith("2.") else "ok"

USES = """
import io, zlib
import cv2
import numpy as np
from PIL import Image
from swin_backbone import _load_order
label = (np.arange(96 * 128) % 151).astype(np.uint8).reshape(96, 128)
data = label.tobytes() * 8
assert zlib.decompress(zlib.compress(data, 9)) == data
buffer = io.BytesIO()
Image.fromarray(label).save(buffer, "PNG", optimize=True)
assert np.array_equal(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))), label)
assert np.array_equal(cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED), label)
assert np.array_equal(cv2.imdecode(cv2.imencode(".png", label)[1], cv2.IMREAD_UNCHANGED), label)
npz = io.BytesIO()
np.savez_compressed(npz, label=label)
npz.seek(0)
assert np.array_equal(np.load(npz)["label"], label)
print(_load_order.ZLIB_STATUS)
"""


@pytest.mark.parametrize("first, status", [
    ("import paddle\nimport swin_backbone\n", REPAIRED),
    ("import paddle\nfrom PIL import Image\nimport zlib\nimport swin_backbone\n", REPAIRED),
    ("import swin_backbone\nimport paddle\n", "preloaded"),
    ("import zlib\nimport paddle\nimport swin_backbone\n", "ok"),
], ids=["paddle-first", "paddle-pillow-first", "package-first", "zlib-first"])
def test_zlib_users_work_in_any_import_order(first, status):
    proc = subprocess.run([sys.executable, "-c", first + USES], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(status), proc.stdout


def test_repair_points_libz_at_itself():
    # After `import paddle` alone (Paddle 2.6), libz's references to its own functions point into libpaddle.so;
    # the repair moves exactly those back, and a second pass finds nothing left to do. Paddle 3's core leaves
    # libz alone: nothing is moved.
    code = ("import paddle\nimport swin_backbone\nfrom swin_backbone import _load_order as lo\n"
            "print(sorted(lo.ZLIB_REPAIRED))\nprint(lo.ensure_zlib())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    repaired, again = proc.stdout.strip().splitlines()[-2:]
    if REPAIRED == "repaired":
        assert "'inflateInit2_'" in repaired and "'deflateReset'" in repaired and "'inflateReset2'" in repaired
    else:
        assert repaired == "[]"
    assert again == "ok"


# Paddle first, then swin_backbone while libz.so.1 cannot be read as ELF (what a libz on another architecture or
# format gives): the repair is impossible, and the PaddleSeg plug-in must refuse rather than let PNGs fail.
UNREPAIRABLE = r"""
import builtins, io
import paddle
real_open = builtins.open
builtins.open = lambda path, mode="r", *a, **k: (io.BytesIO(b"\x7fELF\x01 not this one") if "libz.so" in str(path)
                                                 and "b" in mode else real_open(path, mode, *a, **k))
import swin_backbone
builtins.open = real_open
from swin_backbone import _load_order
print("STATUS", _load_order.ZLIB_STATUS)
try:
    import swin_backbone.paddleseg
    print("LOADED")
except ImportError as error:
    print("REFUSED", error)
"""


@pytest.mark.plugins  # Paddle 2.6 (whose zlib clash this is) with PaddleSeg
def test_paddleseg_plugin_refuses_where_the_repair_is_impossible():
    proc = subprocess.run([sys.executable, "-c", UNREPAIRABLE], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == "STATUS unverified (ValueError: not an ELF64 little-endian object)", lines
    assert lines[-1].startswith("REFUSED paddle was imported before swin_backbone") and \
        "could not be repaired here" in lines[-1] and "Import swin_backbone before paddle." in lines[-1], lines
