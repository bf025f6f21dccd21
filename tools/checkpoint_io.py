"""Training checkpoints that survive a kill at any moment, read back through the safe reader.

A checkpoint is a folder (`last/`, `best/`) holding model.pdparams, optimizer.pdopt and state.json; state.json
is written last, so a folder whose state.json parses is complete. A new checkpoint is written to FOLDER.tmp,
the old one is moved to FOLDER.old, FOLDER.tmp becomes FOLDER, and only then FOLDER.old is deleted: at every
moment one complete copy exists, and `recover` puts the newest complete one back in place.
"""
import json
import os
import shutil
from typing import Any, Dict, Optional, Tuple

import paddle

from swin_backbone.errors import MalformedFileError
from swin_backbone.safe_load import load_pickle_file

FILES = ("model.pdparams", "optimizer.pdopt", "state.json")


def _sync_dir(path: str) -> None:
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _sync_file(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def read_state(folder: str) -> Optional[Dict[str, Any]]:
    """The state.json of a complete checkpoint folder, or None if the folder is missing or incomplete."""
    if not all(os.path.isfile(os.path.join(folder, name)) for name in FILES):
        return None
    try:
        with open(os.path.join(folder, "state.json")) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("epoch"), int) else None


def recover(folder: str) -> Optional[Dict[str, Any]]:
    """Leave the newest complete one of FOLDER, FOLDER.tmp and FOLDER.old as FOLDER and delete the others;
    returns its state, or None when there is no complete checkpoint."""
    candidates = [(read_state(path), path) for path in (folder, folder + ".tmp", folder + ".old")]
    complete = [(state["epoch"], -rank, path, state) for rank, (state, path) in enumerate(candidates) if state]
    if not complete:
        return None
    _, _, newest, state = max(complete)
    for _, path in candidates:  # older or incomplete: deleting them never touches the newest
        if path != newest and os.path.lexists(path):
            shutil.rmtree(path)
    if newest != folder:
        os.replace(newest, folder)
    return state


def save(folder: str, model_state: Dict[str, Any], optimizer_state: Dict[str, Any], state: Dict[str, Any]) -> None:
    """Write a complete checkpoint to FOLDER, replacing the old one only once the new one is on disk."""
    staging, previous = folder + ".tmp", folder + ".old"
    recover(folder)
    if os.path.lexists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    paddle.save(model_state, os.path.join(staging, "model.pdparams"))
    paddle.save(optimizer_state, os.path.join(staging, "optimizer.pdopt"))
    with open(os.path.join(staging, "state.json"), "w") as handle:
        json.dump(state, handle, indent=1, default=str)
    for name in FILES:
        _sync_file(os.path.join(staging, name))
    _sync_dir(staging)
    if os.path.isdir(folder):
        os.replace(folder, previous)
    os.replace(staging, folder)
    _sync_dir(os.path.dirname(os.path.abspath(folder)))
    if os.path.lexists(previous):
        shutil.rmtree(previous)


def load(folder: str, repair: bool = True) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(model state, optimizer state, state.json) of the newest complete checkpoint at FOLDER (after a kill too).

    repair=False only reads (no renaming or deleting): for the processes of a run other than rank 0, which
    has put the newest complete copy in place with `recover` before they read.
    """
    state = recover(folder) if repair else read_state(folder)
    if state is None:
        if os.path.isfile(os.path.join(folder, "state.json")):
            raise MalformedFileError(f"{folder}: incomplete checkpoint (state.json unreadable or a file of "
                                     f"{', '.join(FILES)} missing)")
        raise FileNotFoundError(f"no checkpoint at {folder} (expected {', '.join(FILES)})")
    model_state = load_pickle_file(os.path.join(folder, "model.pdparams"), "checkpoint")
    optimizer_state = load_pickle_file(os.path.join(folder, "optimizer.pdopt"), "checkpoint")
    for path, value in (("model.pdparams", model_state), ("optimizer.pdopt", optimizer_state)):
        if not isinstance(value, dict):
            raise MalformedFileError(f"{os.path.join(folder, path)}: expected a dict, found {type(value).__name__}")
    return model_state, optimizer_state, state


def atomic_paddle_save(save):
    """`save` (paddle.save) that writes PATH.tmp, syncs it and renames it to PATH: a kill never leaves a
    truncated file where a checkpoint was. For the frameworks' own checkpoint writers (see `atomic_saves`)."""
    def saving(obj, path, *args, **kwargs):
        if not isinstance(path, (str, os.PathLike)):
            return save(obj, path, *args, **kwargs)
        staging = os.fspath(path) + ".tmp"
        try:
            save(obj, staging, *args, **kwargs)
            _sync_file(staging)
            os.replace(staging, path)
        finally:
            if os.path.lexists(staging):
                os.remove(staging)
        _sync_dir(os.path.dirname(os.path.abspath(path)))

    saving.__wrapped__ = save
    return saving


def atomic_saves() -> None:
    """Make paddle.save atomic per file in this process (PaddleDetection and PaddleSeg call it by that name)."""
    if not hasattr(paddle.save, "__wrapped__"):
        paddle.save = atomic_paddle_save(paddle.save)
