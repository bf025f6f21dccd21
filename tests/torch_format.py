"""Writes files in the `torch.save` zip format without torch, for converter tests."""
import io
import pickle
import sys
import types
import zipfile
from typing import Any

import numpy as np

_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


class _Tensor:
    def __init__(self, array: np.ndarray):
        self.array = np.ascontiguousarray(array)


class CraftedTensor:
    """A tensor with an explicit (possibly malformed) view of its storage: offset, size, stride and the
    element count its storage declares. Tensors made from the same `storage` array share one storage."""

    def __init__(self, storage: np.ndarray, offset: int, size: tuple, stride: tuple, declared_numel: int = None):
        self.shared = storage
        self.storage, self.offset, self.size, self.stride = np.ascontiguousarray(storage), offset, size, stride
        self.declared_numel = storage.size if declared_numel is None else declared_numel


def _fake_torch_modules() -> dict:
    """Stand-ins for torch and torch._utils, so pickle can name their globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called when writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


def save_torch_zip(obj: Any, path: str, extra_pickle: bytes = None) -> None:
    """torch.save-compatible zip of `obj`, where numpy arrays become tensors; or a raw data.pkl."""
    fakes = _fake_torch_modules()
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    storages = []
    crafted_keys = {}  # CraftedTensors given the same storage array share one storage, as tied torch tensors do

    def wrap(value):
        if isinstance(value, CraftedTensor):
            return value
        if isinstance(value, np.ndarray):
            return _Tensor(value)
        if isinstance(value, dict):
            return {k: wrap(v) for k, v in value.items()}
        return value

    class Pickler(pickle.Pickler):
        def persistent_id(self, item):
            if isinstance(item, tuple) and item and item[0] == "__storage__":
                return item[1:]
            return None

        def reducer_override(self, item):
            if isinstance(item, _Tensor):
                array = item.array
                key = str(len(storages))
                storages.append(array)
                storage_type = getattr(fakes["torch"], _STORAGE_NAMES[array.dtype])
                strides = tuple(s // array.itemsize for s in array.strides)
                storage = ("__storage__", "storage", storage_type, key, "cpu", array.size)
                return fakes["torch._utils"]._rebuild_tensor_v2, (storage, 0, array.shape, strides, False, {})
            if isinstance(item, CraftedTensor):
                key = crafted_keys.get(id(item.shared))
                if key is None:
                    key = crafted_keys[id(item.shared)] = str(len(storages))
                    storages.append(item.storage)
                storage_type = getattr(fakes["torch"], _STORAGE_NAMES[item.storage.dtype])
                storage = ("__storage__", "storage", storage_type, key, "cpu", item.declared_numel)
                return fakes["torch._utils"]._rebuild_tensor_v2, (storage, item.offset, item.size, item.stride,
                                                                  False, {})
            return NotImplemented

    try:
        if extra_pickle is None:
            buffer = io.BytesIO()
            Pickler(buffer, protocol=2).dump(wrap(obj))
            data = buffer.getvalue()
        else:
            data = extra_pickle
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
        for key, array in enumerate(storages):
            archive.writestr(f"archive/data/{key}", array.tobytes())
        archive.writestr("archive/version", "3\n")
