"""Read the authors' PyTorch checkpoints without torch and map them onto our models.

`read_torch_checkpoint` parses the `torch.save` zip container with an unpickler that can only rebuild
tensors; `convert_state_dict` is a pure function from their state dict (numpy arrays) to ours;
`load_pretrained` ties the two to a model and reports what did not match.
"""
import io
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

# Linear weights are the only 2-D tensors named `*.weight` in Swin (norms are 1-D, the patch conv 4-D).
_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle asks for something other than tensors and plain containers."""


class CheckpointKeyError(KeyError):
    """Converted weights do not match the model (raised only in strict mode)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ConversionReport:
    """What convert_state_dict / load_pretrained did besides one-to-one copies."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        lines = list(self.notes)
        for title, keys in (("resized", self.resized), ("dropped", self.dropped),
                            ("missing (left at initialisation)", self.missing),
                            ("unexpected (ignored)", self.unexpected)):
            if keys:
                lines.append(f"{title}: {len(keys)}: " + ", ".join(keys))
        return "\n".join(lines) if lines else "all keys matched"


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


class _StateDict(dict):
    """Stands in for OrderedDict: torch pickles state dicts with a `_metadata` attribute."""


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickler for torch's data.pkl that resolves only tensor rebuild functions and storage types."""

    _allowed = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter")}

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._storages: Dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) in self._allowed:
            return getattr(self, "_" + name.lstrip("_"))
        raise UnsafeCheckpointError(
            f"refusing to load {module}.{name} from the checkpoint: only tensors and plain containers "
            "are allowed (the file may be malicious, or hold objects other than weights)")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unexpected persistent id in checkpoint: {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if storage_type not in _STORAGE_DTYPES:
            raise UnsafeCheckpointError(f"unsupported storage type in checkpoint: {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            dtype = _STORAGE_DTYPES[storage_type]
            if dtype == "bfloat16":
                self._storages[key] = _bfloat16_to_float32(np.frombuffer(raw, dtype=np.uint16))
            else:
                self._storages[key] = np.frombuffer(raw, dtype=dtype)
        return self._storages[key]

    @staticmethod
    def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size: Tuple[int, ...],
                           stride: Tuple[int, ...], *_unused: Any) -> np.ndarray:
        if not size:
            return storage[offset].copy()
        strides = [s * storage.itemsize for s in stride]
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides)
        return np.ascontiguousarray(view)

    @staticmethod
    def _rebuild_tensor(storage: np.ndarray, offset: int, size: Tuple[int, ...],
                        stride: Tuple[int, ...]) -> np.ndarray:
        return _TensorOnlyUnpickler._rebuild_tensor_v2(storage, offset, size, stride)

    @staticmethod
    def _rebuild_parameter(tensor: np.ndarray, *_unused: Any) -> np.ndarray:
        return tensor


def read_torch_checkpoint(path: str) -> Dict[str, Any]:
    """Load a `torch.save` zip file as nested dicts of numpy arrays, executing nothing from the pickle."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a torch zip checkpoint (saved by torch >= 1.6); re-save it with "
                         "torch.save(obj, path) in a recent torch, or pass a converted .pdparams")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the torch archive, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).decode().strip() != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        return _TensorOnlyUnpickler(archive.read(pickles[0]), archive, prefix).load()


def extract_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """The weights of a classification (`model`) or detection (`state_dict`, `backbone.` prefix) checkpoint."""
    for key in ("model", "state_dict"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, np.ndarray)}
    if any(k.startswith("backbone.") for k in tensors):
        tensors = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    if not tensors:
        raise ValueError("no weights found in checkpoint (looked for a 'model' or 'state_dict' entry)")
    return tensors


def resize_bias_table(table: np.ndarray, window_size: int) -> np.ndarray:
    """[(2w-1)^2, nH] -> [(2v-1)^2, nH] for window v, bicubic on the (2w-1) x (2w-1) grid."""
    side = int(round(np.sqrt(table.shape[0])))
    target = 2 * window_size - 1
    if side == target:
        return table
    grid = table.T.reshape(1, table.shape[1], side, side)
    return _bicubic(grid, (target, target)).reshape(table.shape[1], -1).T.copy()


def resize_pos_embed(pos: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """[1, D, h, w] -> [1, D, H, W], bicubic."""
    if tuple(pos.shape[2:]) == tuple(grid):
        return pos
    return _bicubic(pos, grid)


def _bicubic(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import paddle
    import paddle.nn.functional as F

    out = F.interpolate(paddle.to_tensor(x.astype("float32")), size=list(size), mode="bicubic",
                        align_corners=False)
    return out.numpy()


def convert_state_dict(source: Mapping[str, np.ndarray], target_shapes: Mapping[str, Tuple[int, ...]],
                       torch_layout: bool = True) -> Tuple[Dict[str, np.ndarray], ConversionReport]:
    """Map a state dict onto a model with parameter shapes `{name: shape}`.

    From the authors' (torch) layout it transposes Linear weights and drops derived buffers; from either
    layout it reshapes and resizes the absolute position embedding and the relative position bias tables
    to the target, and drops a classifier head or final norm the target has no place (or shape) for.
    """
    report = ConversionReport()
    converted: Dict[str, np.ndarray] = {}
    for name, value in source.items():
        if name.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            continue
        if torch_layout and name.endswith(".weight") and value.ndim == 2:
            value = value.T
        target = target_shapes.get(name)
        if target is None:
            if name.startswith(("head.", "norm.")):
                report.dropped.append(name)
            else:
                report.unexpected.append(name)
            continue
        target = tuple(target)
        if name == "absolute_pos_embed" and value.ndim == 3:  # classification layout [1, L, D]
            side = int(round(np.sqrt(value.shape[1])))
            value = value.reshape(1, side, side, -1).transpose(0, 3, 1, 2)
        if value.shape != target:
            if name.endswith("relative_position_bias_table") and value.shape[1] == target[1]:
                window = (int(round(np.sqrt(target[0]))) + 1) // 2
                value = resize_bias_table(value, window)
                report.resized.append(name)
            elif name == "absolute_pos_embed" and value.shape[:2] == target[:2]:
                value = resize_pos_embed(value, target[2:])
                report.resized.append(name)
            elif name.startswith("head."):
                report.dropped.append(name)
                report.notes.append(f"classifier head {name} {value.shape} does not fit {target}: "
                                    "dropped, the head starts from scratch")
                continue
            else:
                raise ValueError(f"{name}: checkpoint shape {value.shape} cannot be mapped to {target}")
        converted[name] = np.ascontiguousarray(value, dtype=np.float32)
    report.missing = sorted(k for k in target_shapes if k not in converted)
    return converted, report


def load_state_file(path: str) -> Dict[str, np.ndarray]:
    """Weights from a converted `.pdparams` or an authors' `.pth` (still in their naming)."""
    if path.endswith(".pdparams"):
        import paddle

        return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in paddle.load(path).items()}
    return extract_state_dict(read_torch_checkpoint(path))


def load_pretrained(model, path: str, strict: bool = False, verbose: bool = True) -> ConversionReport:
    """Load `.pdparams` or authors' `.pth` weights into `model`, converting on the fly; report mismatches."""
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights, report = convert_state_dict(load_state_file(path), target, torch_layout=not path.endswith(".pdparams"))
    if strict and not report.clean:
        raise CheckpointKeyError(f"{path} does not match the model:\n{report.summary()}")
    with warnings.catch_warnings():  # paddle warns per missing key; the report below names them all
        warnings.filterwarnings("ignore", message="Skip loading")
        model.set_state_dict(weights)
    if verbose and (report.notes or report.missing or report.unexpected or report.dropped or report.resized):
        print(f"[swin_backbone] loaded {path}:\n{report.summary()}")
    return report
