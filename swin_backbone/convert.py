"""Map Swin checkpoints (the authors', other libraries' and our own `.pdparams`) onto our models.

`convert_state_dict` is a pure function from a state dict in the authors' layout (numpy arrays) to ours;
`convert_sources.py` first renames other libraries' layouts into the authors'. `read_weights_file` reads a
file or a Hugging Face model folder through the safe readers (`safe_load.py`); `load_pretrained` converts
it for a model and reports what it did, what it dropped and why, and what it left at initialisation.
"""
import contextlib
import contextvars
import json
import os
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import convert_sources
from .errors import (CheckpointKeyError, CheckpointShapeError, MalformedFileError, SwinInputError,  # noqa: F401
                     UnsafeFileError)
from .safe_load import load_pickle_file, read_safetensors, read_torch_checkpoint

_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
_STAGE_NORM = re.compile(r"norm[0-9]+\.")  # the detection backbone's per-stage output norms
IMAGENET_22K_CLASSES, IMAGENET_1K_CLASSES = 21841, 1000


def compact(names: List[str], spell_out: int = 4) -> str:
    """Names, with more than `spell_out` that differ only in numbers listed once: `layers.*.blocks.*.attn.qkv.weight
    (x12)`."""
    shapes = [re.sub(r"\d+", "*", name) for name in names]
    counts = {shape: shapes.count(shape) for shape in shapes}
    shown: List[str] = []
    for name, shape in zip(names, shapes):
        if counts[shape] <= spell_out:
            shown.append(name)
        elif f"{shape} (x{counts[shape]})" not in shown:
            shown.append(f"{shape} (x{counts[shape]})")
    return ", ".join(shown)


@dataclass
class ConversionReport:
    """What convert_state_dict / load_pretrained did: copies, conversions, drops (with why) and gaps."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    copied: List[str] = field(default_factory=list)
    renamed: int = 0
    converted: List[str] = field(default_factory=list)
    derived: List[str] = field(default_factory=list)
    reasons: Dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.unexpected

    @property
    def matched(self) -> int:
        """Tensors copied as they are (Linear weights transposed from torch's layout)."""
        return len(self.copied)

    def drop(self, name: str, reason: str) -> None:
        self.dropped.append(name)
        self.reasons[name] = reason

    def summary(self) -> str:
        lines = list(self.notes)
        if self.matched:
            renamed = f", {self.renamed} of them renamed from the file's names" if self.renamed else ""
            lines.append(f"matched: {self.matched} tensors copied as they are{renamed}")
        by_reason: "OrderedDict[str, List[str]]" = OrderedDict()
        for name in self.dropped:
            by_reason.setdefault(self.reasons.get(name, ""), []).append(name)
        sections = [("converted", self.converted), ("resized", self.resized)]
        sections += [(f"dropped ({reason})" if reason else "dropped", keys) for reason, keys in by_reason.items()]
        sections += [("dropped (derived buffers: the model rebuilds them from the window size)", self.derived),
                     ("missing (left at initialisation)", self.missing), ("unexpected (ignored)", self.unexpected)]
        for title, keys in sections:
            if keys:
                lines.append(f"{title}: {len(keys)}: " + compact(keys))
        if self.clean:
            lines.append("all keys matched" + (" (apart from what is listed as converted, resized or dropped)"
                                               if self.resized or self.dropped or self.converted else ""))
        return "\n".join(lines)

    def left_at_initialisation(self) -> str:
        """One line for a loading tool: the tensors the file did not fill, or that it filled them all."""
        if not self.missing:
            return "every tensor of the model was loaded from the file"
        return (f"{len(self.missing)} tensors of the model are not in the file and keep their initial values: "
                + compact(self.missing))


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
    if "head.weight" in names:  # a classifier, whether or not it also normalises every stage (mmpretrain's can)
        return "classifier"
    if any(n.startswith("norm0.") for n in names):
        return "backbone"
    if "norm.weight" in names:
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


def _is_22k_to_1k(value: np.ndarray, target: Tuple[int, ...]) -> bool:
    return value.shape[-1] == IMAGENET_22K_CLASSES and target[-1] == IMAGENET_1K_CLASSES and \
        value.shape[:-1] == target[:-1]


def imagenet_22k_to_1k() -> np.ndarray:
    """[1000] indices of ImageNet-1K's classes among ImageNet-22K's 21,841 (the authors' data/map22kto1k.txt)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "map22kto1k.txt")
    with open(path, encoding="ascii") as handle:
        return np.array([int(line) for line in handle if line.strip()], dtype=np.int64)


def convert_state_dict(source: Mapping[str, np.ndarray], target_shapes: Mapping[str, Tuple[int, ...]],
                       torch_layout: bool = True, origin: str = "checkpoint"
                       ) -> Tuple[Dict[str, np.ndarray], ConversionReport]:
    """Map a state dict in the authors' layout onto a model with parameter shapes `{name: shape}`.

    From the authors' (torch) layout it transposes Linear weights and drops derived buffers; from either
    layout it reshapes and resizes the absolute position embedding and the relative position bias tables
    to the target, maps an ImageNet-22K head onto a 1,000-class one (the authors' class map), and drops a
    classifier head or final norm the target has no place (or shape) for.
    Raises CheckpointShapeError for a tensor that cannot fit, CheckpointKeyError when no tensor matches.
    """
    report = ConversionReport()
    converted: Dict[str, np.ndarray] = {}
    for name, value in source.items():
        if name.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            report.derived.append(name)
            continue
        if torch_layout and name.endswith(".weight") and value.ndim == 2:
            value = value.T
        target = target_shapes.get(name)
        if target is None:
            if name.startswith(("head.", "norm.")) or _STAGE_NORM.match(name):
                report.drop(name, "this model has no place for it")
            else:
                report.unexpected.append(name)
            continue
        target = tuple(target)
        if name == "absolute_pos_embed" and value.ndim == 3:  # classification layout [1, L, D]
            side = int(round(np.sqrt(value.shape[1])))
            value = value.reshape(1, side, side, -1).transpose(0, 3, 1, 2)
        if value.shape == target:
            report.copied.append(name)
        elif name.endswith("relative_position_bias_table") and value.shape[1] == target[1]:
            window = (int(round(np.sqrt(target[0]))) + 1) // 2
            value = resize_bias_table(value, window)
            report.resized.append(name)
        elif name == "absolute_pos_embed" and value.shape[:2] == target[:2]:
            value = resize_pos_embed(value, target[2:])
            report.resized.append(name)
        elif name.startswith("head.") and _is_22k_to_1k(value, target):
            value = value[..., imagenet_22k_to_1k()]
            report.converted.append(f"{name} (ImageNet-22K's 21,841 classes -> ImageNet-1K's 1,000 by the "
                                    "authors' class map)")
        elif name.startswith("head."):
            report.drop(name, "a head for another number of classes")
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
        report.notes.append("the per-stage output norms norm0..norm3 (a detection / segmentation backbone's) have no "
                            "place in this model: dropped (convert for the backbone, e.g. with --backbone, to keep "
                            "them)")
    report.missing = sorted(k for k in target_shapes if k not in converted)
    return converted, report


# ----------------------------------------------------------------------------------------------- reading
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what a Hugging Face / timm model folder holds


@dataclass
class WeightsFile:
    """A checkpoint as read: the whole object, its flat weights, and where they came from."""

    path: str
    checkpoint: Mapping[str, Any]
    weights: Dict[str, np.ndarray]
    torch_layout: bool
    config: Optional[Dict[str, Any]] = None
    file: str = ""

    @property
    def described(self) -> str:
        """The file's format, as the report names it."""
        if self.file.endswith(".safetensors"):
            fmt = "safetensors"
        elif self.torch_layout:
            fmt = "a torch.save file"
        else:
            fmt = "a Paddle .pdparams"
        return fmt + (" with config.json" if self.config is not None else "")


def _is_safetensors(path: str) -> bool:
    """By name, or by shape: an 8-byte header length, then a JSON object."""
    if path.endswith(".safetensors"):
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < os.path.getsize(path)


def _read_config(folder: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedFileError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise MalformedFileError(f"{path}: expected a JSON object")
    return config


def _folder_weights(folder: str) -> str:
    """The weights file of a Hugging Face / timm model folder (safetensors preferred)."""
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"{folder}: a folder without {' or '.join(WEIGHT_FILES)} (a Hugging Face or timm model "
                            "folder holds one of them beside config.json)")


def _read_one(path: str) -> Tuple[Mapping[str, Any], bool]:
    """(the checkpoint object, torch_layout) of one file: safetensors, a torch zip or a Paddle pickle."""
    if zipfile.is_zipfile(path):
        return read_torch_checkpoint(path), True
    if _is_safetensors(path):
        return read_safetensors(path)[0], True
    return load_pickle_file(path, "weights file"), False


def _read_sharded(index_path: str) -> Dict[str, np.ndarray]:
    """The weights of a sharded checkpoint: every shard its index names, each through the safe readers."""
    folder = os.path.dirname(index_path)
    try:
        with open(index_path, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise MalformedFileError(f"{index_path}: not a checkpoint index ({type(error).__name__}: {error})") from None
    weights: Dict[str, np.ndarray] = {}
    for shard in shards:
        if os.path.basename(shard) != shard:
            raise MalformedFileError(f"{index_path}: shard {shard!r} is not a file beside the index")
        part, _ = _read_one(os.path.join(folder, shard))
        weights.update(checkpoint_weights(part, os.path.join(folder, shard)))
    return weights


def read_weights_file(path: str) -> WeightsFile:
    """A checkpoint file (.pth, .bin, .safetensors, .pdparams) or a Hugging Face / timm model folder
    (config.json + model.safetensors or pytorch_model.bin), through the safe readers."""
    if "://" in path:
        raise SwinInputError(f"{path}: must be a local file or folder (nothing is downloaded)")
    config, file = None, path
    if os.path.isdir(path):
        config, file = _read_config(path), _folder_weights(path)
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if file.endswith(".index.json"):
        return WeightsFile(path, {}, _read_sharded(file), True, config, file)
    checkpoint, torch_layout = _read_one(file)
    if not isinstance(checkpoint, Mapping):
        raise MalformedFileError(f"{file}: expected a dict of weights, found a {type(checkpoint).__name__}")
    return WeightsFile(path, checkpoint, checkpoint_weights(checkpoint, file), torch_layout, config, file)


def read_checkpoint(path: str) -> Tuple[Mapping[str, Any], Dict[str, np.ndarray], bool]:
    """(the whole checkpoint, its flat weights, torch_layout) of a file or model folder, through the safe readers."""
    found = read_weights_file(path)
    return found.checkpoint, found.weights, found.torch_layout


def read_weights(path: str) -> Tuple[Dict[str, np.ndarray], bool]:
    """(flat weights, torch_layout) of a checkpoint file or model folder."""
    _, weights, torch_layout = read_checkpoint(path)
    return weights, torch_layout


# ------------------------------------------------------------------------------------ recognising sources
@dataclass
class SourceWeights:
    """A checkpoint in the authors' layout, what it was, and the report of getting there."""

    file: WeightsFile
    adapted: Optional[convert_sources.Adapted]
    weights: Dict[str, np.ndarray]
    kind: str
    report: ConversionReport

    @property
    def source(self) -> convert_sources.Source:
        return self.adapted.source if self.adapted else convert_sources.AUTHORS


def _config_notes(config: Optional[Mapping[str, Any]]) -> List[str]:
    """What a Hugging Face config.json says that our models do differently (and would change the outputs)."""
    if not config:
        return []
    notes = []
    if config.get("hidden_act", "gelu") != "gelu":
        notes.append(f"warning: config.json's hidden_act is {config['hidden_act']!r}; our models use GELU")
    if abs(float(config.get("layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
        notes.append(f"warning: config.json's layer_norm_eps is {config['layer_norm_eps']}; our models use 1e-5")
    return notes


def describe(found: WeightsFile, source: Optional[convert_sources.Source], weights: Mapping[str, np.ndarray],
             kind: str) -> str:
    """The report's first line: where the file comes from, its format, what it holds."""
    if source is None:
        what = "our own weights"
    else:
        what = source.name
        config = found.config or {}
        if config.get("architectures"):
            what += f" ({', '.join(config['architectures'])})"
        elif config.get("architecture"):
            what += f" ({config['architecture']})"
    holds = KINDS[kind]
    head = weights.get("head.weight")
    if kind == "classifier" and head is not None:
        classes = head.shape[0 if found.torch_layout else -1]
        holds += f" for {classes:,} classes" + (" (ImageNet-22K)" if classes == IMAGENET_22K_CLASSES else "")
    return f"found {what}, {found.described}: {holds}"


def read_source(path: str) -> SourceWeights:
    """A checkpoint of any supported library, renamed into the authors' layout, and a report saying what it is.

    Our own `.pdparams` pass through as they are. Raises SwinInputError (one line) for a Swin V2 or another
    model family.
    """
    found = read_weights_file(path)
    adapted = None
    weights = found.weights
    if found.torch_layout:
        source = convert_sources.recognise(found.weights, found.config, path)
        adapted = convert_sources.adapt(found.weights, source)
        weights = adapted.weights
    kind = checkpoint_kind(weights)
    report = ConversionReport(notes=[describe(found, adapted.source if adapted else None, weights, kind)])
    report.notes += _config_notes(found.config)
    if adapted:
        report.notes += adapted.notes
        report.converted += adapted.converted
        for name, reason in adapted.dropped.items():
            report.drop(name, reason)
    return SourceWeights(found, adapted, weights, kind, report)


def merge_reports(first: ConversionReport, then: ConversionReport) -> ConversionReport:
    """`then` (the conversion onto the model) with what `first` (reading and renaming the file) recorded."""
    then.notes = first.notes + then.notes
    then.converted = first.converted + then.converted
    for name in first.dropped:
        then.drop(name, first.reasons.get(name, ""))
    return then


def convert_source(found: SourceWeights, target: Mapping[str, Tuple[int, ...]], origin: str
                   ) -> Tuple[Dict[str, np.ndarray], ConversionReport]:
    """A read checkpoint's backbone (or classifier) onto a model with parameter shapes `{name: shape}`."""
    weights, others = backbone_part(found.weights)
    if found.adapted is not None:
        moved = convert_sources.final_norm_for(weights, found.adapted.source, target)
        if moved:
            found.adapted.renamed.update(moved)
            found.report.notes.append("its last stage's norm is the one its classifier pools after: loaded as the "
                                      "final norm")
    if others:
        found.report.notes.append(f"only its backbone is used; not loaded: {', '.join(others)} (convert_weights.py "
                                  "--config converts a whole mmdetection / mmsegmentation model)")
    converted, report = convert_state_dict(weights, target, torch_layout=found.file.torch_layout, origin=origin)
    if found.adapted is not None:  # a merged or permuted tensor is reported as converted, not as copied
        report.copied = [name for name in report.copied if name not in found.adapted.changed]
        report.renamed = sum(1 for name in report.copied if name in found.adapted.renamed)
    return converted, merge_reports(found.report, report)


_STRICT_LOADS: contextvars.ContextVar = contextvars.ContextVar("swin_backbone_strict_loads", default=False)


@contextlib.contextmanager
def strict_loads(enabled: bool = True):
    """Inside, every load_pretrained is strict: for tools whose models load their own `pretrained` weights
    while a framework builds them (PaddleSeg's backbone config, PaddleDetection's)."""
    token = _STRICT_LOADS.set(bool(enabled) or _STRICT_LOADS.get())
    try:
        yield
    finally:
        _STRICT_LOADS.reset(token)


def check_fill(model, path: str, what: str = "weights", strict: bool = False, verbose: bool = True,
               checkpoint: Optional[Mapping] = None) -> ConversionReport:
    """What a whole-model `.pdparams` that PaddleDetection or PaddleSeg loads itself will leave at initialisation.

    Reads `path` with the safe reader (so it also refuses an unsafe file before the framework unpickles it),
    lists the model's tensors it lacks or holds in another shape, and prints one line (verbose);
    strict=True (or a `strict_loads()` block) raises CheckpointKeyError instead. `checkpoint`: `path` as the
    safe reader has already read it, to not read it twice.
    """
    strict = strict or _STRICT_LOADS.get()
    weights = checkpoint_weights(load_pickle_file(path, what) if checkpoint is None else checkpoint, path)
    report = ConversionReport()
    for name, value in model.state_dict().items():
        if name in weights and tuple(weights[name].shape) == tuple(value.shape):
            report.copied.append(name)
        else:
            report.missing.append(name)
    report.unexpected = sorted(set(weights) - set(model.state_dict()))
    if strict and report.missing:
        raise CheckpointKeyError(f"--strict: {what} {path} leaves {len(report.missing)} tensors of the model at "
                                 f"initialisation: {compact(report.missing)}")
    if verbose:
        print(f"[swin_backbone] {what} {path}: {report.left_at_initialisation()}")
    return report


def load_pretrained(model, path: str, strict: bool = False, verbose: bool = True) -> ConversionReport:
    """Load weights of any supported source into `model`, converting on the fly, and report what was done.

    `path`: a `.pdparams`, an authors' `.pth`, another library's checkpoint (`.pth`, `.bin`, `.safetensors`)
    or a Hugging Face / timm model folder. The report's first line names the source; it lists what was
    converted and dropped (and why), and the tensors of the model the file did not fill, which keep their
    initial values (printed unless verbose=False). strict=True (or a `strict_loads()` block) raises
    CheckpointKeyError instead of loading when any tensor is missing or unexpected.
    """
    strict = strict or _STRICT_LOADS.get()
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights, report = convert_source(read_source(path), target, path)
    if strict and not report.clean:
        raise CheckpointKeyError(f"{path} does not match the model (strict):\n{report.summary()}")
    with warnings.catch_warnings():  # paddle warns per missing key; the report below names them all
        warnings.filterwarnings("ignore", message="Skip loading")
        model.set_state_dict(weights)
    if verbose:
        print(f"[swin_backbone] loaded {path}:\n{report.summary()}")
    return report
