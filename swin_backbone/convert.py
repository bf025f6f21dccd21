"""Map the authors' checkpoints (and our own `.pdparams`) onto our models.

`convert_state_dict` is a pure function from their state dict (numpy arrays) to ours; `load_pretrained`
reads a file through the safe reader (`safe_load.py`), converts it for a model and reports what did not
match.
"""
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from .errors import CheckpointKeyError, CheckpointShapeError, MalformedFileError, UnsafeFileError  # noqa: F401
from .safe_load import load_pickle_file, read_torch_checkpoint

_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
_STAGE_NORM = re.compile(r"norm[0-9]+\.")  # the detection backbone's per-stage output norms


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
        if self.clean:
            lines.append("all keys matched" + (" (apart from what is listed as resized or dropped)"
                                               if self.resized or self.dropped else ""))
        return "\n".join(lines)


# What a checkpoint's keys say it is, and how the converter names it in its report.
KINDS = {"classifier": "a Swin classifier (head and final norm)",
         "backbone": "a Swin detection/segmentation backbone (per-stage norms norm0..norm3)",
         "detector": "a full mmdetection detector (backbone, neck, RPN and RoI heads)",
         "segmenter": "a full mmsegmentation segmenter (backbone, decode and auxiliary heads)",
         "weights": "Swin weights"}


def checkpoint_weights(checkpoint: Mapping[str, Any], origin: str = "checkpoint") -> Dict[str, np.ndarray]:
    """The flat weights of a checkpoint: under `model` (classification), `state_dict` (mmdet/mmseg) or at the top."""
    for key in ("model", "state_dict"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    tensors = {str(k): v for k, v in checkpoint.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise CheckpointKeyError(f"{origin}: no weights found (looked for arrays at the top level or under a "
                                 "'model' or 'state_dict' entry)")
    return tensors


def checkpoint_kind(weights: Mapping[str, np.ndarray]) -> str:
    """'detector', 'segmenter', 'backbone', 'classifier' or 'weights' (none of these), from the keys."""
    prefixes = {k.split(".", 1)[0] for k in weights}
    if "backbone" in prefixes and prefixes & {"rpn_head", "roi_head", "neck"}:
        return "detector"
    if "backbone" in prefixes and prefixes & {"decode_head", "auxiliary_head"}:
        return "segmenter"
    names = {k[len("backbone."):] if k.startswith("backbone.") else k for k in weights}
    if any(n.startswith("norm0.") for n in names):
        return "backbone"
    if "head.weight" in names or "norm.weight" in names:
        return "classifier"
    return "weights"


def backbone_part(weights: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """(the `backbone.` weights without the prefix, the other top-level parts) when there is such a prefix."""
    if not any(k.startswith("backbone.") for k in weights):
        return dict(weights), []
    others = sorted({k.split(".", 1)[0] for k in weights if not k.startswith("backbone.")})
    return {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}, others


def extract_state_dict(checkpoint: Mapping[str, Any], origin: str = "checkpoint") -> Dict[str, np.ndarray]:
    """The backbone weights of a classification (`model`) or detection (`state_dict`, `backbone.`) checkpoint."""
    return backbone_part(checkpoint_weights(checkpoint, origin))[0]


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
                       torch_layout: bool = True, origin: str = "checkpoint"
                       ) -> Tuple[Dict[str, np.ndarray], ConversionReport]:
    """Map a state dict onto a model with parameter shapes `{name: shape}`.

    From the authors' (torch) layout it transposes Linear weights and drops derived buffers; from either
    layout it reshapes and resizes the absolute position embedding and the relative position bias tables
    to the target, and drops a classifier head or final norm the target has no place (or shape) for.
    Raises CheckpointShapeError for a tensor that cannot fit, CheckpointKeyError when no tensor matches.
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
            if name.startswith(("head.", "norm.")) or _STAGE_NORM.match(name):
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
                raise CheckpointShapeError(f"{origin}: {name} has shape {list(value.shape)}, which cannot be mapped "
                                           f"to the model's {list(target)}")
        converted[name] = np.ascontiguousarray(value, dtype=np.float32)
    if source and not converted:
        raise CheckpointKeyError(
            f"{origin}: none of its {len(source)} tensors matches the model (its keys begin "
            f"{', '.join(sorted(source)[:3])}; the model's {', '.join(sorted(target_shapes)[:3])}): "
            "is it a Swin checkpoint for this task?")
    if any(_STAGE_NORM.match(name) for name in report.dropped):
        report.notes.append("the detection backbone's per-stage norms norm0..norm3 have no place in this model: "
                            "dropped (convert for the backbone, e.g. with --backbone, to keep them)")
    report.missing = sorted(k for k in target_shapes if k not in converted)
    return converted, report


def read_checkpoint(path: str) -> Tuple[Mapping[str, Any], Dict[str, np.ndarray], bool]:
    """(the whole checkpoint, its flat weights, torch_layout) of an authors' `.pth` (torch zip, their naming)
    or a `.pdparams`, through the safe reader."""
    torch_layout = zipfile.is_zipfile(path)
    checkpoint = read_torch_checkpoint(path) if torch_layout else load_pickle_file(path, "weights file")
    if not isinstance(checkpoint, Mapping):
        raise MalformedFileError(f"{path}: expected a dict of weights, found a {type(checkpoint).__name__}")
    return checkpoint, checkpoint_weights(checkpoint, path), torch_layout


def read_weights(path: str) -> Tuple[Dict[str, np.ndarray], bool]:
    """(flat weights, torch_layout) of an authors' `.pth` or a `.pdparams`."""
    _, weights, torch_layout = read_checkpoint(path)
    return weights, torch_layout


def load_state_file(path: str) -> Tuple[Dict[str, np.ndarray], bool, ConversionReport]:
    """(backbone or classifier weights, torch_layout, a report saying what the file was and what was left out)."""
    weights, torch_layout = read_weights(path)
    kind = checkpoint_kind(weights)
    weights, others = backbone_part(weights)
    report = ConversionReport(notes=[f"found {KINDS[kind]}"])
    if others:
        report.notes.append(f"only its backbone is used; not loaded: {', '.join(others)}")
    return weights, torch_layout, report


def load_pretrained(model, path: str, strict: bool = False, verbose: bool = True) -> ConversionReport:
    """Load `.pdparams` or authors' `.pth` weights into `model`, converting on the fly; report mismatches."""
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights, torch_layout, found = load_state_file(path)
    weights, report = convert_state_dict(weights, target, torch_layout=torch_layout, origin=path)
    report.notes = found.notes + report.notes
    if strict and not report.clean:
        raise CheckpointKeyError(f"{path} does not match the model:\n{report.summary()}")
    with warnings.catch_warnings():  # paddle warns per missing key; the report below names them all
        warnings.filterwarnings("ignore", message="Skip loading")
        model.set_state_dict(weights)
    if verbose and (report.notes or report.missing or report.unexpected or report.dropped or report.resized):
        print(f"[swin_backbone] loaded {path}:\n{report.summary()}")
    return report
