"""The safe readers for weight files (pickles, torch zips, safetensors): nothing the project opens can run code.

Paddle's `.pdparams` / `.pdopt`, torch's `.pth` (a zip around a pickle) and CIFAR-10's batches are pickles,
and unpickling calls whatever function a file names. This reader resolves only what those formats need:
numpy arrays of numeric dtypes, plain containers, and torch's tensor rebuild functions, which become numpy
arrays checked against their storage. Anything else is refused with one sentence that names the file and
the global it asked for; a truncated or corrupt file gets one sentence too.

    load_pickle_file(path)       a .pdparams / .pdopt / other pickle: nested dicts and lists of numpy arrays
    check_pickle_file(path)      the same check, for a file we hand to PaddleDetection's or PaddleSeg's loader
    read_torch_checkpoint(path)  a torch.save zip: nested dicts of numpy arrays, every view bounds-checked
    unpickle_bytes(data, source) a pickle in memory (a CIFAR batch from a tarball)
    read_safetensors(path)       a .safetensors file (JSON header + raw bytes, no pickle): {name: array}, metadata
"""
import collections
import io
import json
import os
import pickle
import zipfile
import zlib
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .errors import MalformedFileError, SwinInputError, UnsafeFileError

_NUMERIC_KINDS = frozenset("biufc")  # bool, signed, unsigned, float, complex
# Harmless constructors of plain values that pickles of numbers and containers name.
_BUILTINS = {"tuple": tuple, "list": list, "dict": dict, "set": set, "frozenset": frozenset, "complex": complex,
             "bytearray": bytearray}
_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class PlainRecord(dict):
    """Stands in for a training script's settings object in a checkpoint (timm's and torchvision's `args`, an
    argparse.Namespace; the authors' `config`, a yacs CfgNode): its fields, as a dict, and none of its code."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict) and not self:
            self.update(state)  # argparse.Namespace: the fields are its state


# Classes that hold only settings, which training scripts save beside the weights; nothing of theirs is imported.
_PLAIN_RECORDS = {("argparse", "Namespace"), ("yacs.config", "CfgNode")}
# Tensors may share storage (views, tied weights), but together they may not declare more than this many
# times the bytes the file's storages really hold: a crafted header cannot ask for a huge allocation.
_VIEW_BUDGET = 4


def _numpy_core():
    """numpy's multiarray and numeric modules (numpy._core in numpy 2, numpy.core before)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:
        from numpy.core import multiarray, numeric
    return multiarray, numeric


def _numeric_dtype(dtype: np.dtype, source: str) -> np.dtype:
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS:
        raise UnsafeFileError(f"{source}: refusing an array of dtype {dtype}: only numeric arrays are allowed")
    return dtype


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """_codecs.encode as protocol-2 pickles use it for bytes; nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 strings")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves numpy's array and scalar rebuilders (numeric dtypes only) and plain containers; nothing else."""

    def __init__(self, data: bytes, source: str, encoding: str = "ASCII"):
        super().__init__(io.BytesIO(data), encoding=encoding)
        self.source = source

    def numpy_global(self, name: str) -> Optional[Callable]:
        multiarray, numeric = _numpy_core()
        source = self.source

        def scalar(dtype: np.dtype, *args: Any) -> Any:
            return multiarray.scalar(_numeric_dtype(dtype, source), *args)

        def frombuffer(buffer: Any, dtype: np.dtype, shape: Tuple[int, ...], order: str) -> np.ndarray:
            return numeric._frombuffer(buffer, _numeric_dtype(dtype, source), shape, order)

        return {"_reconstruct": multiarray._reconstruct, "scalar": scalar, "_frombuffer": frombuffer}.get(name)

    def find_class(self, module: str, name: str) -> Any:
        found = None
        if module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"):
            found = self.numpy_global(name)
        elif module == "numpy" and name in ("ndarray", "dtype"):
            found = getattr(np, name)
        elif (module, name) == ("collections", "OrderedDict"):
            found = collections.OrderedDict
        elif module in ("builtins", "__builtin__"):
            found = _BUILTINS.get(name)
        elif (module, name) in _PLAIN_RECORDS:
            found = PlainRecord
        elif (module, name) == ("_codecs", "encode"):
            found = lambda text, encoding="latin1": _latin1_encode(text, encoding)  # noqa: E731  (fresh per file)
        if found is None:
            raise UnsafeFileError(
                f"{self.source}: refusing to load {module}.{name}: only arrays, tensors and plain containers are "
                "allowed (the file may be malicious, or hold objects other than weights and data)")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self.source}: refusing a persistent reference {pid!r} in a plain pickle")


def _check_values(value: Any, source: str, depth: int = 0) -> Any:
    """Walk what was unpickled: every array numeric (an object array could smuggle anything back in)."""
    if depth > 100:
        raise MalformedFileError(f"{source}: nested more than 100 levels deep")
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        _numeric_dtype(value.dtype, source)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, source, depth + 1)
            _check_values(item, source, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _check_values(item, source, depth + 1)
    return value


def unpickle_bytes(data: bytes, source: str, encoding: str = "ASCII", unpickler: type = _RestrictedUnpickler,
                   **kwargs: Any) -> Any:
    """Unpickle `data` (from `source`, named in errors) allowing only numeric arrays and plain containers."""
    try:
        value = unpickler(data, source, encoding=encoding, **kwargs).load()
    except (UnsafeFileError, MalformedFileError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            UnicodeDecodeError, RecursionError, MemoryError, zipfile.BadZipFile, zlib.error, OSError) as error:
        raise MalformedFileError(f"{source}: not a readable pickle (truncated or corrupt?): "
                                 f"{type(error).__name__}: {error}") from None
    return _check_values(value, source)


def local_file(path: str, what: str = "file") -> str:
    """`path`, if it names a local file; otherwise a one-line error (a URL is refused: nothing is downloaded)."""
    if "://" in path:
        raise SwinInputError(f"{what} {path}: must be a local file (nothing is downloaded)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _read_file(path: str, what: str) -> bytes:
    with open(local_file(path, what), "rb") as handle:
        return handle.read()


def load_pickle_file(path: str, what: str = "file") -> Any:
    """A Paddle `.pdparams` / `.pdopt` (or any pickle of arrays): its dicts and lists, with numpy arrays.

    Paddle pickles a state dict's tensors as numpy arrays (and a loose tensor as a (name, array) tuple),
    so what comes back feeds `set_state_dict` directly.
    """
    data = _read_file(path, what)
    if data[:2] == b"PK":
        raise MalformedFileError(f"{path}: a zip archive (a torch .pth?), not a Paddle pickle")
    value = unpickle_bytes(data, path, encoding="latin1")
    if isinstance(value, dict):  # Paddle's own bookkeeping, dropped by paddle.load too
        value.pop("StructuredToParameterName@@", None)
    return value


def check_pickle_file(path: str, what: str = "file") -> None:
    """Refuse `path` (UnsafeFileError / MalformedFileError) unless it holds only arrays and plain containers.

    For files we hand to PaddleDetection's or PaddleSeg's own loaders, which call pickle without limits.
    """
    if zipfile.is_zipfile(path):
        read_torch_checkpoint(path)
    else:
        load_pickle_file(path, what)


# ------------------------------------------------------------------------------------------------- torch
def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


class _TorchUnpickler(_RestrictedUnpickler):
    """For torch's data.pkl: also resolves tensor rebuilds and storage types, reading storages from the zip."""

    _rebuilds = {"_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter"}

    def __init__(self, data: bytes, source: str, encoding: str = "ASCII", archive: zipfile.ZipFile = None,
                 prefix: str = ""):
        super().__init__(data, source, encoding)
        self._archive = archive
        self._prefix = prefix
        self._storages: Dict[str, np.ndarray] = {}
        stored = sum(i.file_size for i in archive.infolist() if i.filename.startswith(f"{prefix}data/"))
        self._budget = _VIEW_BUDGET * stored

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _TORCH_STORAGES:
            return name
        if module == "torch._utils" and name in self._rebuilds:
            return getattr(self, name.lstrip("_"))
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeFileError(f"{self.source}: unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if storage_type not in _TORCH_STORAGES:
            raise UnsafeFileError(f"{self.source}: unsupported storage type {storage_type!r}")
        if key not in self._storages:
            dtype = _TORCH_STORAGES[storage_type]
            itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
            name = f"{self._prefix}data/{key}"
            try:
                info = self._archive.getinfo(name)
            except KeyError:
                raise MalformedFileError(f"{self.source}: storage {name} is missing from the archive") from None
            if not isinstance(numel, int) or numel < 0 or info.file_size != numel * itemsize:
                raise MalformedFileError(f"{self.source}: storage {name} declares {numel!r} elements of {itemsize} "
                                         f"bytes but holds {info.file_size} bytes")
            raw = np.frombuffer(self._archive.read(name), dtype=np.uint16 if dtype == "bfloat16" else dtype)
            self._storages[key] = _bfloat16_to_float32(raw) if dtype == "bfloat16" else raw
        return self._storages[key]

    def rebuild_tensor_v2(self, storage: np.ndarray, offset: Any, size: Any, stride: Any, *_unused: Any) -> np.ndarray:
        """A copy of the view (offset, size, stride) of `storage`, refused unless it lies inside the storage."""
        if not isinstance(storage, np.ndarray):
            raise MalformedFileError(f"{self.source}: a tensor without a storage")
        fields = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
        if (fields is None or len(size) != len(stride)
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in fields)):
            raise MalformedFileError(f"{self.source}: invalid tensor layout offset={offset!r} size={size!r} "
                                     f"stride={stride!r}")
        numel = int(np.prod(size, dtype=object)) if size else 1
        if numel == 0:
            return np.zeros(size, storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size or numel > storage.size:
            raise MalformedFileError(f"{self.source}: a tensor of size {list(size)}, stride {list(stride)} at offset "
                                     f"{offset} reaches beyond its storage of {storage.size} elements")
        self._budget -= numel * storage.itemsize
        if self._budget < 0:
            raise MalformedFileError(f"{self.source}: its tensors declare more than {_VIEW_BUDGET}x the data the "
                                     "file holds")
        if not size:
            return np.array(storage[offset])
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                               strides=[s * storage.itemsize for s in stride], writeable=False)
        return np.ascontiguousarray(view)

    def rebuild_tensor(self, storage: np.ndarray, offset: Any, size: Any, stride: Any) -> np.ndarray:
        return self.rebuild_tensor_v2(storage, offset, size, stride)

    @staticmethod
    def rebuild_parameter(tensor: np.ndarray, *_unused: Any) -> np.ndarray:
        return tensor


def read_torch_checkpoint(path: str) -> Dict[str, Any]:
    """A `torch.save` zip file as nested dicts of numpy arrays, executing nothing from its pickle."""
    if not zipfile.is_zipfile(local_file(path, "checkpoint")):
        raise MalformedFileError(f"{path} is not a torch zip checkpoint (saved by torch >= 1.6); re-save it with "
                                 "torch.save(obj, path) in a recent torch, or pass a converted .pdparams")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise MalformedFileError(f"{path}: expected one data.pkl in the torch archive, found {pickles}")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).decode().strip() != "little":
                raise MalformedFileError(f"{path}: big-endian checkpoints are not supported")
            return unpickle_bytes(archive.read(pickles[0]), path, unpickler=_TorchUnpickler, archive=archive,
                                  prefix=prefix)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
        raise MalformedFileError(f"{path}: unreadable zip archive (truncated or corrupt?): {error}") from None


# --------------------------------------------------------------------------------------------- safetensors
# The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
# of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}} (padded with
# spaces), then the data section. Offsets are relative to the data section; the tensors tile it exactly: no
# overlap, no gap, nothing after the last one (the reference implementation's rules). Nothing is unpickled.
_SAFETENSORS_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
                       "I32": np.int32, "U32": np.uint32, "I64": np.int64, "U64": np.uint64,
                       "F16": np.float16, "BF16": "bfloat16", "F32": np.float32, "F64": np.float64}
# Dtypes the format defines that hold no Swin weights we could use: named in the refusal.
_SAFETENSORS_UNSUPPORTED = ("F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64")
_SAFETENSORS_MAX_HEADER = 100_000_000  # the reference reader's limit
_SAFETENSORS_MAX_RANK = 8


def _safetensors_error(path: str, rule: str, detail: str) -> MalformedFileError:
    error = MalformedFileError(f"{path}: not a valid safetensors file (rule '{rule}'): {detail}")
    error.rule = rule
    return error


def _unique_keys(pairs: Any) -> dict:
    """json object_pairs_hook: a name given twice would let the second silently replace the first."""
    result = {}
    for key, value in pairs:
        if key in result:
            raise KeyError(key)
        result[key] = value
    return result


def _safetensors_header(path: str, handle: Any, file_size: int) -> Tuple[Dict[str, Any], int]:
    """(the header's JSON object, the offset of the data section), every field checked against the file."""
    if file_size < 8:
        raise _safetensors_error(path, "header length", f"{file_size} bytes, too short for the 8-byte header length")
    length = int.from_bytes(handle.read(8), "little")
    if not 2 <= length <= min(_SAFETENSORS_MAX_HEADER, file_size - 8):
        raise _safetensors_error(path, "header length", f"declares a {length}-byte header in a file of {file_size} "
                                 f"bytes (at most {min(_SAFETENSORS_MAX_HEADER, file_size - 8)} possible)")
    raw = handle.read(length)
    try:
        if not raw.startswith(b"{"):
            raise ValueError("the header does not start with '{'")
        header = json.loads(raw.decode("utf-8").rstrip(" "), object_pairs_hook=_unique_keys)
    except KeyError as error:
        raise _safetensors_error(path, "duplicate name", f"{error.args[0]!r} appears twice in the header") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _safetensors_error(path, "header JSON", f"{type(error).__name__}: {error}") from None
    if not isinstance(header, dict):
        raise _safetensors_error(path, "header JSON", f"the header is a {type(header).__name__}, not an object")
    return header, 8 + length


def _safetensors_entry(path: str, name: str, entry: Any, data_size: int) -> Tuple[Any, Tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of one header entry, refused unless it describes bytes inside the data."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _safetensors_error(path, "entry", f"{name!r} is {str(entry)[:80]}, not exactly "
                                 "{dtype, shape, data_offsets}")
    dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype_name not in _SAFETENSORS_DTYPES:
        why = "Swin weights never use it" if dtype_name in _SAFETENSORS_UNSUPPORTED else "the format has no such dtype"
        raise _safetensors_error(path, "dtype", f"{name!r} has dtype {str(dtype_name)[:20]!r}: {why}")

    def integers(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                               for v in value)

    if not integers(shape) or len(shape) > _SAFETENSORS_MAX_RANK:
        raise _safetensors_error(path, "shape", f"{name!r} has shape {str(shape)[:80]}: expected at most "
                                 f"{_SAFETENSORS_MAX_RANK} non-negative integers")
    if not integers(offsets) or len(offsets) != 2 or not offsets[0] <= offsets[1] <= data_size:
        raise _safetensors_error(path, "offsets", f"{name!r} has data_offsets {str(offsets)[:80]}: expected "
                                 f"[begin, end] with 0 <= begin <= end <= {data_size} (the data section's size)")
    dtype = _SAFETENSORS_DTYPES[dtype_name]
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    numel = int(np.prod(shape, dtype=object)) if shape else 1
    if offsets[1] - offsets[0] != numel * itemsize:
        raise _safetensors_error(path, "size", f"{name!r} is {dtype_name} {shape} ({numel * itemsize} bytes) but "
                                 f"its offsets span {offsets[1] - offsets[0]} bytes")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _safetensors_layout(path: str, entries: Dict[str, Tuple[Any, Tuple[int, ...], int, int]], data_size: int) -> None:
    """The tensors must tile the data section: sorted by offset, each begins where the previous one ended."""
    end = 0
    for name, (_, _, begin, stop) in sorted(entries.items(), key=lambda item: (item[1][2], item[1][3])):
        if begin < end:
            raise _safetensors_error(path, "overlap", f"{name!r} begins at byte {begin}, inside the previous "
                                     f"tensor (which ends at {end})")
        if begin > end:
            raise _safetensors_error(path, "gap", f"bytes {end}..{begin} before {name!r} belong to no tensor")
        end = stop
    if end != data_size:
        raise _safetensors_error(path, "trailing bytes", f"the tensors end at byte {end} of a {data_size}-byte data "
                                 "section")


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """({name: array}, metadata) of a `.safetensors` file; fp16/bf16 tensors become float32.

    Only JSON and raw bytes are read. The header is checked against the file before any tensor is made
    (MalformedFileError names the file and the rule that refused it); each tensor is a copy of exactly the
    bytes its entry declares.
    """
    local_file(path, "safetensors file")
    file_size = os.path.getsize(path)
    with open(path, "rb") as handle:
        header, data_start = _safetensors_header(path, handle, file_size)
    data_size = file_size - data_start
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise _safetensors_error(path, "entry", "__metadata__ must map strings to strings")
    entries = {name: _safetensors_entry(path, name, entry, data_size) for name, entry in header.items()}
    _safetensors_layout(path, entries, data_size)
    # the layout rule makes the declared bytes exactly the data section: no view can ask for more (budget 1x)
    tensors: Dict[str, np.ndarray] = {}
    with open(path, "rb") as handle:
        for name, (dtype, shape, begin, end) in entries.items():
            handle.seek(data_start + begin)
            raw = handle.read(end - begin)
            if len(raw) != end - begin:
                raise _safetensors_error(path, "offsets", f"{name!r}: the file ended while reading it (truncated?)")
            if dtype == "bfloat16":
                array = _bfloat16_to_float32(np.frombuffer(raw, dtype="<u2"))
            else:
                array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
                if array.dtype == np.float16:
                    array = array.astype(np.float32)
            tensors[name] = np.array(array.reshape(shape), dtype=array.dtype.newbyteorder("="))
    return tensors, dict(metadata)
