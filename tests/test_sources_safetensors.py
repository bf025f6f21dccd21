"""Our safetensors reader: JSON header + raw bytes, nothing executed, every header field checked against the file.

Each refusal test asserts WHICH rule refused the file (MalformedFileError.rule, also named in the message).
"""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from swin_backbone import MalformedFileError
from swin_backbone.safe_load import read_safetensors

DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64", np.dtype("uint8"): "U8"}


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (truncation; the test values are exact in bf16)."""
    return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write(path, tensors: dict = None, header: dict = None, data: bytes = None, raw_header: bytes = None,
          length: int = None, metadata: dict = None) -> str:
    """A safetensors file from arrays (laid out as the format wants), or from a header and data given as they are."""
    if header is None:
        header, chunks, offset = {}, [], 0
        for name, value in (tensors or {}).items():
            if isinstance(value, tuple):  # ("BF16", bits)
                dtype, value = value
            else:
                dtype = DTYPES[value.dtype]
            blob = np.ascontiguousarray(value).tobytes()
            header[name] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + len(blob)]}
            chunks.append(blob)
            offset += len(blob)
        data = b"".join(chunks) if data is None else data
    if metadata is not None:
        header = {"__metadata__": metadata, **header}
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw) if length is None else length) + raw + (data or b""))
    return str(path)


def refused(path) -> MalformedFileError:
    with pytest.raises(MalformedFileError) as error:
        read_safetensors(str(path))
    message = str(error.value)
    assert "\n" not in message and os.path.basename(str(path)) in message
    assert f"rule '{error.value.rule}'" in message
    return error.value


def test_reads_what_the_format_holds(tmp_path):
    weights = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
    half = np.array([[0.5, -1.25], [3.0, 65504.0]], np.float16)
    brain = np.array([1.0, -2.5, 0.15625, 2.0 ** 70], np.float32)
    index = np.arange(6, dtype=np.int64).reshape(2, 3) - 3
    path = write(tmp_path / "m.safetensors", {"w": weights, "h": half, "b": ("BF16", bfloat16_bits(brain)),
                                              "i": index, "empty": np.zeros((0, 4), np.float32)},
                 metadata={"format": "pt"})
    tensors, metadata = read_safetensors(path)
    assert metadata == {"format": "pt"}
    np.testing.assert_array_equal(tensors["w"], weights)
    assert tensors["h"].dtype == np.float32 and tensors["b"].dtype == np.float32  # fp16 / bf16 become float32
    np.testing.assert_array_equal(tensors["h"], half.astype(np.float32))
    np.testing.assert_array_equal(tensors["b"], brain)
    assert tensors["i"].dtype == np.int64 and tensors["i"].tolist() == index.tolist()
    assert tensors["empty"].shape == (0, 4)
    tensors["w"][0, 0] = 7  # copies, not views of a buffer
    assert read_safetensors(path)[0]["w"][0, 0] == 0


def test_header_order_need_not_follow_the_data(tmp_path):
    """The JSON object may list tensors in any order; only their offsets must tile the data."""
    a, b = np.ones(2, np.float32), np.full(3, 2, np.float32)
    header = {"b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]},
              "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    tensors, _ = read_safetensors(write(tmp_path / "m.safetensors", header=header, data=a.tobytes() + b.tobytes()))
    assert tensors["a"].tolist() == [1, 1] and tensors["b"].tolist() == [2, 2, 2]


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
DATA_8 = np.zeros(2, np.float32).tobytes()


@pytest.mark.parametrize("rule, kwargs", [
    ("header length", dict(raw_header=b"", length=0)),
    ("header length", dict(header={"w": F32_2}, data=DATA_8, length=10 ** 6)),       # beyond the file
    ("header length", dict(header={"w": F32_2}, data=DATA_8, length=2 ** 63)),       # absurd
    ("header JSON", dict(raw_header=b"{not json", data=DATA_8)),
    ("header JSON", dict(raw_header=b'["w"]   ', data=DATA_8)),
    ("header JSON", dict(raw_header=b'\xff{"w": 1}', data=DATA_8)),
    ("duplicate name", dict(raw_header=b'{"w": ' + json.dumps(F32_2).encode() + b', "w": '
                            + json.dumps(F32_2).encode() + b"}", data=DATA_8)),
    ("entry", dict(header={"w": {"dtype": "F32", "shape": [2]}}, data=DATA_8)),
    ("entry", dict(header={"w": dict(F32_2, extra=1)}, data=DATA_8)),
    ("entry", dict(header={"w": F32_2, "__metadata__": {"format": 1}}, data=DATA_8)),
    ("dtype", dict(header={"w": dict(F32_2, dtype="F33")}, data=DATA_8)),
    ("dtype", dict(header={"w": dict(F32_2, dtype="F8_E4M3", shape=[8])}, data=DATA_8)),
    ("shape", dict(header={"w": dict(F32_2, shape=[-2])}, data=DATA_8)),
    ("shape", dict(header={"w": dict(F32_2, shape=[2.0])}, data=DATA_8)),
    ("shape", dict(header={"w": dict(F32_2, shape=[1] * 9)}, data=DATA_8)),
    ("offsets", dict(header={"w": dict(F32_2, data_offsets=[0, 80])}, data=DATA_8)),   # past the data
    ("offsets", dict(header={"w": dict(F32_2, data_offsets=[8, 0])}, data=DATA_8)),    # backwards
    ("offsets", dict(header={"w": dict(F32_2, data_offsets=[0])}, data=DATA_8)),
    ("size", dict(header={"w": dict(F32_2, shape=[3])}, data=DATA_8)),
    ("size", dict(header={"w": dict(F32_2, shape=[100_000, 100_000])}, data=DATA_8)),  # 37 GiB from 8 bytes
    ("overlap", dict(header={"w": F32_2, "v": F32_2}, data=DATA_8)),                    # two views of one buffer
    ("overlap", dict(header={"w": dict(F32_2, data_offsets=[0, 8]), "v": dict(F32_2, shape=[1],
                                                                               data_offsets=[4, 8])}, data=DATA_8)),
    ("gap", dict(header={"w": dict(F32_2, shape=[1], data_offsets=[4, 8])}, data=DATA_8)),
    ("trailing bytes", dict(header={"w": dict(F32_2, shape=[1], data_offsets=[0, 4])}, data=DATA_8)),
])
def test_malformed_headers_are_refused_by_their_rule(tmp_path, rule, kwargs):
    error = refused(write(tmp_path / "crafted.safetensors", **kwargs))
    assert error.rule == rule, str(error)


def test_a_file_too_short_for_its_header_length(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    assert refused(path).rule == "header length"


def test_a_truncated_file_is_refused_before_reading(tmp_path):
    good = write(tmp_path / "good.safetensors", {"w": np.ones((64, 64), np.float32)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(open(good, "rb").read()[:-100])
    assert refused(cut).rule in ("offsets", "trailing bytes")


def test_tools_end_with_one_line_naming_the_rule(tmp_path):
    path = write(tmp_path / "evil.safetensors", header={"w": F32_2, "v": F32_2}, data=DATA_8)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"), path,
                           str(tmp_path / "out.pdparams")], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("error: ") and "evil.safetensors" in lines[-1] and "rule 'overlap'" in lines[-1]
    assert not (tmp_path / "out.pdparams").exists()
