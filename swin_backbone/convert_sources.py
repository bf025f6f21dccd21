"""Recognise the Swin V1 checkpoints of other libraries and rename them into the authors' layout.

Pure functions on `{name: array}` (numpy, the file's own names, torch layouts). Each source is a rule table in
the style of `convert_mm.py`: a pattern matched against their whole name and the authors' name it becomes, or
a reason for dropping it. What a rename cannot express is a named whole-tensor step, applied after the table:

- Hugging Face keeps query, key and value as three Linears: concatenated (in that order) into `qkv`, which is
  what the authors' attention splits three ways.
- mmpretrain / mmcls (and mmdet's own Swin) merge patches with `nn.Unfold`, which orders the 4C channels
  channel-major (c * 4 + 2 * row + col) where the authors concatenate the four positions (row, col) = (0,0),
  (1,0), (0,1), (1,1): the reduction's input columns and the norm before it are permuted back.
- timm >= 0.9 moves each patch merging to the start of the next stage: `layers.{i}.downsample` is the
  authors' `layers.{i-1}.downsample` (the same function; only where it is stored differs).
- torchvision numbers stages and merges as one sequence: `features.{2i+1}` is stage i, `features.{2i+2}`
  its merge, `features.0` the patch embedding.
- mmpretrain's classifier normalises its last stage with `norm{last}`, which is the authors' final `norm`.

`adapt` returns the renamed weights and a record of what it merged, permuted or dropped (and why) for the
converter's report; `convert.convert_state_dict` then maps the authors' layout onto our models.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .errors import CheckpointKeyError, SwinInputError

# (a pattern matched against their whole name, the authors' name: a template for match.expand or a function)
Rule = Tuple[str, Union[str, Callable[[re.Match], Optional[str]]]]
# (a pattern, why a tensor that matches it is not part of a Swin backbone or classifier)
Drop = Tuple[str, str]


@dataclass(frozen=True)
class Source:
    """A checkpoint layout: how the report names it, its rule table and its whole-tensor steps."""

    key: str
    name: str
    rules: Tuple[Rule, ...] = ()
    drops: Tuple[Drop, ...] = ()
    merge_qkv: bool = False
    unfold_merging: bool = False
    last_stage_norm_is_final: bool = False


@dataclass
class Adapted:
    """The authors' layout of a checkpoint, and what getting there took (for the report)."""

    weights: Dict[str, np.ndarray]
    source: Source
    renamed: Set[str] = field(default_factory=set)  # the authors' names that came from other names
    changed: Set[str] = field(default_factory=set)  # the authors' names whose values were merged or permuted
    converted: List[str] = field(default_factory=list)
    dropped: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- rule tables
_LEAF = r"(?P<leaf>weight|bias)"
_AUTHORS = (r"(?P<name>patch_embed\..+|absolute_pos_embed|layers\.\d+\.(?:blocks|downsample)\..+|"
            r"norm\d*\.(?:weight|bias)|head\.(?:weight|bias))")
_DERIVED = ("derived buffer (the model rebuilds it from the window size)")

AUTHORS_RULES: Tuple[Rule, ...] = ((_AUTHORS, r"\g<name>"),)

_HF_BLOCK = r"(?:swin\.)?encoder\.layers\.(?P<i>\d+)\.blocks\.(?P<j>\d+)\."
_HF_OURS = r"layers.\g<i>.blocks.\g<j>."
HF_RULES: Tuple[Rule, ...] = (
    (r"(?:swin\.)?embeddings\.patch_embeddings\.projection\." + _LEAF, r"patch_embed.proj.\g<leaf>"),
    (r"(?:swin\.)?embeddings\.norm\." + _LEAF, r"patch_embed.norm.\g<leaf>"),
    (r"(?:swin\.)?embeddings\.position_embeddings", "absolute_pos_embed"),
    (_HF_BLOCK + r"layernorm_before\." + _LEAF, _HF_OURS + r"norm1.\g<leaf>"),
    (_HF_BLOCK + r"layernorm_after\." + _LEAF, _HF_OURS + r"norm2.\g<leaf>"),
    # transformers 4 names, then the names transformers 5 uses in memory (it saves the 4 names by default)
    (_HF_BLOCK + r"attention\.(?:self\.(?P<p>query|key|value)|(?P<q>[qkv])_proj)\." + _LEAF,
     lambda m: f"layers.{m['i']}.blocks.{m['j']}.attn.{(m['p'] or m['q'])[0]}.{m['leaf']}"),
    (_HF_BLOCK + r"attention\.(?:self|relative_position_bias)\.(?P<t>relative_position_bias_table|"
     r"relative_position_index)", _HF_OURS + r"attn.\g<t>"),
    (_HF_BLOCK + r"attention\.(?:output\.dense|o_proj)\." + _LEAF, _HF_OURS + r"attn.proj.\g<leaf>"),
    (_HF_BLOCK + r"(?:intermediate\.dense|mlp\.fc1)\." + _LEAF, _HF_OURS + r"mlp.fc1.\g<leaf>"),
    (_HF_BLOCK + r"(?:output\.dense|mlp\.fc2)\." + _LEAF, _HF_OURS + r"mlp.fc2.\g<leaf>"),
    (r"(?:swin\.)?encoder\.layers\.(?P<i>\d+)\.downsample\.(?P<part>norm|reduction)\." + _LEAF,
     r"layers.\g<i>.downsample.\g<part>.\g<leaf>"),
    (r"hidden_states_norms\.stage(?P<n>\d+)\." + _LEAF, lambda m: f"norm{int(m['n']) - 1}.{m['leaf']}"),
    (r"(?:swin\.)?layernorm\." + _LEAF, r"norm.\g<leaf>"),
    (r"classifier\." + _LEAF, r"head.\g<leaf>"),
)
HF_DROPS: Tuple[Drop, ...] = (
    (r"(?:swin\.)?embeddings\.mask_token", "SimMIM's mask token (masked-image pre-training only)"),
    (r"decoder\..+", "SimMIM's pixel decoder (masked-image pre-training only)"),
)
# SwinBackbone's forward never uses the final norm of the model inside it (transformers 5 saves it anyway).
HF_BACKBONE_DROPS: Tuple[Drop, ...] = (
    (r"swin\.layernorm\..+", "SwinBackbone's final norm, which its forward never uses (it normalises each stage "
     "with hidden_states_norms)"),
    (r"hidden_states_norms\.stem\..+", "SwinBackbone's norm of the patch embeddings (out_features 'stem'); our "
     "backbone puts out the four stages only"),
)


def _timm_downsample(match: re.Match) -> Optional[str]:
    stage = int(match["i"])
    return f"layers.{stage - 1}.downsample.{match['rest']}" if stage > 0 else None


TIMM_RULES: Tuple[Rule, ...] = (
    (r"layers[._](?P<i>\d+)\.downsample\.(?P<rest>(?:norm|reduction)\.(?:weight|bias))", _timm_downsample),
    (r"layers_(?P<i>\d+)\.(?P<rest>blocks\..+)", r"layers.\g<i>.\g<rest>"),  # timm's features_only models
    (r"head\.fc\." + _LEAF, r"head.\g<leaf>"),
    (_AUTHORS, r"\g<name>"),
)


def _torchvision_block(match: re.Match) -> Optional[str]:
    index = int(match["k"])
    if index % 2 == 0:
        return None
    part = {"mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}.get(match["part"], match["part"])
    return f"layers.{(index - 1) // 2}.blocks.{match['j']}.{part}{match['rest']}"


def _torchvision_merge(match: re.Match) -> Optional[str]:
    index = int(match["k"])
    return f"layers.{index // 2 - 1}.downsample.{match['part']}.{match['leaf']}" if index % 2 == 0 else None


TORCHVISION_RULES: Tuple[Rule, ...] = (
    (r"features\.0\.0\." + _LEAF, r"patch_embed.proj.\g<leaf>"),
    (r"features\.0\.2\." + _LEAF, r"patch_embed.norm.\g<leaf>"),
    (r"features\.(?P<k>\d+)\.(?P<j>\d+)\.(?P<part>norm1|norm2|attn\.qkv|attn\.proj|mlp\.0|mlp\.3)"
     r"(?P<rest>\.(?:weight|bias))", _torchvision_block),
    (r"features\.(?P<k>\d+)\.(?P<j>\d+)\.(?P<part>attn\.relative_position_bias_table|"
     r"attn\.relative_position_index)(?P<rest>)", _torchvision_block),
    (r"features\.(?P<k>\d+)\.(?P<part>norm|reduction)\." + _LEAF, _torchvision_merge),
    (r"(?P<name>norm|head)\." + _LEAF, r"\g<name>.\g<leaf>"),
)

_MM = r"(?:backbone\.)?"
_MM_BLOCK = _MM + r"stages\.(?P<i>\d+)\.blocks\.(?P<j>\d+)\."
MMPRETRAIN_RULES: Tuple[Rule, ...] = (
    (_MM + r"patch_embed\.projection\." + _LEAF, r"patch_embed.proj.\g<leaf>"),
    (_MM + r"patch_embed\.norm\." + _LEAF, r"patch_embed.norm.\g<leaf>"),
    (_MM + r"absolute_pos_embed", "absolute_pos_embed"),
    (_MM_BLOCK + r"(?P<n>norm1|norm2)\." + _LEAF, _HF_OURS + r"\g<n>.\g<leaf>"),
    (_MM_BLOCK + r"attn\.w_msa\.(?P<p>qkv|proj)\." + _LEAF, _HF_OURS + r"attn.\g<p>.\g<leaf>"),
    (_MM_BLOCK + r"attn\.w_msa\.(?P<t>relative_position_bias_table|relative_position_index)",
     _HF_OURS + r"attn.\g<t>"),
    (_MM_BLOCK + r"ffn\.layers\.0\.0\." + _LEAF, _HF_OURS + r"mlp.fc1.\g<leaf>"),
    (_MM_BLOCK + r"ffn\.layers\.1\." + _LEAF, _HF_OURS + r"mlp.fc2.\g<leaf>"),
    (_MM + r"stages\.(?P<i>\d+)\.downsample\.(?P<part>norm|reduction)\." + _LEAF,
     r"layers.\g<i>.downsample.\g<part>.\g<leaf>"),
    (_MM + r"norm(?P<n>\d*)\." + _LEAF, r"norm\g<n>.\g<leaf>"),  # `norm.` is mmcls' oldest name for norm3
    (r"head\.fc\." + _LEAF, r"head.\g<leaf>"),
)
MMPRETRAIN_DROPS: Tuple[Drop, ...] = (
    (r"data_preprocessor\..+", "the input normalisation's constants, not weights"),
    (_MM + r"stages\.\d+\.blocks\.\d+\.attn\.attn_mask", _DERIVED),
)

_ENCODER = r"encoder\." + _AUTHORS
SIMMIM_RULES: Tuple[Rule, ...] = ((_ENCODER, r"\g<name>"),)
SIMMIM_DROPS: Tuple[Drop, ...] = (
    (r"encoder\.mask_token", "SimMIM's mask token (masked-image pre-training only)"),
    (r"decoder\..+", "SimMIM's pixel decoder (masked-image pre-training only)"),
)
MOBY_DROPS: Tuple[Drop, ...] = (
    (r"encoder_k\..+", "MoBY's momentum (key) encoder, a running average of the encoder"),
    (r"(?:projector|projector_k|predictor)\..+", "MoBY's projection and prediction heads (pre-training only)"),
    (r"queue1|queue2|queue_ptr", "MoBY's queue of negative keys (pre-training only)"),
)

AUTHORS = Source("authors", "the authors' layout (their releases, detection and segmentation repositories; "
                 "timm < 0.9)", AUTHORS_RULES)
SOURCES: Dict[str, Source] = {s.key: s for s in (
    AUTHORS,
    Source("simmim", "the authors' SimMIM pre-training checkpoint (encoder. prefix)", SIMMIM_RULES, SIMMIM_DROPS),
    Source("moby", "the authors' MoBY self-supervised checkpoint (Transformer-SSL)", SIMMIM_RULES, MOBY_DROPS),
    Source("hf", "a Hugging Face transformers Swin", HF_RULES, HF_DROPS, merge_qkv=True),
    Source("hf-backbone", "a Hugging Face transformers Swin", HF_RULES, HF_BACKBONE_DROPS + HF_DROPS,
           merge_qkv=True),
    Source("timm", "a timm >= 0.9 Swin", TIMM_RULES),
    Source("torchvision", "a torchvision Swin", TORCHVISION_RULES),
    Source("mmpretrain", "an mmpretrain / mmcls Swin", MMPRETRAIN_RULES, MMPRETRAIN_DROPS, unfold_merging=True,
           last_stage_norm_is_final=True),
)}

# A whole detector's or segmenter's other parts, beside a backbone in another library's layout (mmdetection's own
# Swin has mmpretrain's): only the backbone converts (the authors' layout has convert_mm.py for whole models).
OTHER_PARTS: Drop = (r"(?:neck|rpn_head|roi_head|bbox_head|mask_head|decode_head|auxiliary_head)\..+",
                     "a detector's or segmenter's neck or heads: only the backbone converts")

# Swin V2 and its relatives store what a V1 model has no place for.
_V2_MARKERS = ("cpb_mlp", "logit_scale", "relative_coords_table")
_OTHER_HF_TYPES = {"swinv2": "Swin Transformer V2", "swin2sr": "Swin2SR (super-resolution)",
                   "donut-swin": "Donut's Swin encoder", "maskformer-swin": "MaskFormer's Swin backbone"}


def unsupported(origin: str, what: str) -> SwinInputError:
    """The one-line error for a checkpoint of something other than a Swin V1."""
    return SwinInputError(f"{origin}: {what}, which is not supported: only Swin Transformer V1 checkpoints "
                          "(tiny/small/base/large, window 7 or 12) load")


# ----------------------------------------------------------------------------------------- recognition
def _has(weights: Mapping[str, np.ndarray], pattern: str) -> bool:
    compiled = re.compile(pattern)
    return any(compiled.fullmatch(name) for name in weights)


def recognise(weights: Mapping[str, np.ndarray], config: Optional[Mapping] = None,
              origin: str = "checkpoint") -> Source:
    """The layout of a checkpoint, from its names (and a Hugging Face or timm config.json beside it)."""
    if config is not None:
        kind = str(config.get("model_type", ""))
        if kind in _OTHER_HF_TYPES:
            raise unsupported(origin, f"config.json says model_type {kind!r} ({_OTHER_HF_TYPES[kind]})")
        architecture = str(config.get("architecture", ""))
        if architecture and not re.fullmatch(r"swin_(tiny|small|base|large)_patch4_window\d+_\d+", architecture):
            raise unsupported(origin, f"config.json names the timm model {architecture!r}")
        if kind and kind != "swin":
            raise unsupported(origin, f"config.json says model_type {kind!r}")
    v2 = sorted({marker for marker in _V2_MARKERS for name in weights if marker in name})
    if v2:
        raise unsupported(origin, f"a Swin Transformer V2 checkpoint (it holds {', '.join(v2)})")
    if _has(weights, r"(?:swin\.)?(?:embeddings\.patch_embeddings|encoder\.layers\.\d+\.blocks\.\d+\."
                     r"layernorm_before)\..+"):
        backbone = (_has(weights, r"hidden_states_norms\..+")
                    or "SwinBackbone" in (config or {}).get("architectures", ()))
        return SOURCES["hf-backbone" if backbone else "hf"]
    if _has(weights, r"features\.0\.0\.weight") and _has(weights, r"features\.1\.0\.attn\.qkv\.weight"):
        return SOURCES["torchvision"]
    if _has(weights, _MM + r"stages\.\d+\.blocks\.\d+\.(?:attn\.w_msa|ffn\.layers)\..+"):
        return SOURCES["mmpretrain"]
    if _has(weights, r"encoder\.layers\.\d+\.blocks\.\d+\.attn\.qkv\.weight"):
        moby = _has(weights, r"(?:encoder_k|projector|predictor)\..+|queue1")
        return SOURCES["moby" if moby else "simmim"]
    if _has(weights, r"head\.fc\.weight|layers_\d+\..+") or (_has(weights, r"layers\.\d+\.downsample\..+")
                                                            and not _has(weights, r"layers\.0\.downsample\..+")):
        return SOURCES["timm"]  # head.fc, merges at the start of a stage, or a features_only model's layers_N
    if config is not None and config.get("architecture"):
        return SOURCES["timm"]
    return AUTHORS


# ----------------------------------------------------------------------------------------------- renaming
def rename_by_rules(name: str, rules: Sequence[Rule]) -> Optional[str]:
    """The name the first rule whose pattern matches `name` whole gives it, or None."""
    for pattern, target in rules:
        match = re.fullmatch(pattern, name)
        if match is not None:
            return target(match) if callable(target) else match.expand(target)
    return None


def _drop_reason(name: str, drops: Sequence[Drop]) -> Optional[str]:
    return next((reason for pattern, reason in drops if re.fullmatch(pattern, name)), None)


def strip_wrapper(weights: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Optional[str]]:
    """Weights without the `module.` prefix every name gets from a DistributedDataParallel save."""
    if weights and all(name.startswith("module.") for name in weights):
        return {name[len("module."):]: value for name, value in weights.items()}, "module."
    return dict(weights), None


def adapt(weights: Mapping[str, np.ndarray], source: Source) -> Adapted:
    """The authors' layout of `weights` (from `source`'s layout): renamed, merged, permuted; the rest dropped.

    Names no rule knows are kept as they are, so the converter reports them (as unexpected, or as the
    whole-model parts of the authors' mmdetection / mmsegmentation checkpoints).
    """
    weights, wrapper = strip_wrapper(weights)
    result = Adapted({}, source)
    if wrapper:
        result.notes.append(f"every name began with {wrapper!r} (a DistributedDataParallel save): removed")
    sources: Dict[str, str] = {}
    drops = source.drops if source is AUTHORS else source.drops + (OTHER_PARTS,)
    for name, value in weights.items():
        reason = _drop_reason(name, drops)
        if reason is not None:
            result.dropped[name] = reason
            continue
        ours = rename_by_rules(name, source.rules)
        if ours is None:
            ours = name
        elif ours != name:
            result.renamed.add(ours)
        if ours in result.weights:
            raise CheckpointKeyError(f"two tensors, {sources[ours]} and {name}, are both the authors' {ours}: "
                                     "is this a mix of two checkpoints?")
        result.weights[ours] = value
        sources[ours] = name
    if source.merge_qkv:
        _merge_qkv(result, sources)
    if source.unfold_merging:
        _reorder_unfold_merging(result, sources)
    return result


def _merge_qkv(result: Adapted, sources: Dict[str, str]) -> None:
    """attn.q / attn.k / attn.v ([C, C] each, torch layout) -> attn.qkv [3C, C], queries first."""
    for name in sorted(n for n in result.weights if re.fullmatch(r".+\.attn\.q\.(?:weight|bias)", n)):
        prefix, leaf = name.rsplit(".attn.q.", 1)
        parts = [f"{prefix}.attn.{p}.{leaf}" for p in "qkv"]
        missing = [p for p in parts if p not in result.weights]
        if missing:
            raise CheckpointKeyError(f"{sources[name]} has no matching {', '.join(missing)} to merge with")
        merged = np.concatenate([result.weights.pop(p) for p in parts], axis=0)
        result.weights[f"{prefix}.attn.qkv.{leaf}"] = merged
        result.changed.add(f"{prefix}.attn.qkv.{leaf}")
        result.converted.append(f"{prefix}.attn.qkv.{leaf} <- {_brace([sources[p] for p in parts])} (merged)")


def _brace(names: List[str]) -> str:
    """a.query.w, a.key.w, a.value.w -> a.{query,key,value}.w"""
    first = names[0].split(".")
    differing = [i for i in range(len(first)) if any(n.split(".")[i] != first[i] for n in names)]
    if len(differing) != 1 or any(len(n.split(".")) != len(first) for n in names):
        return ", ".join(names)
    i = differing[0]
    return ".".join(first[:i] + ["{" + ",".join(n.split(".")[i] for n in names) + "}"] + first[i + 1:])


def unfold_to_authors_order(channels: int) -> np.ndarray:
    """Indices into nn.Unfold's 4C channels (c * 4 + 2 * row + col) in the authors' order (position-major,
    positions (0,0), (1,0), (0,1), (1,1))."""
    c = channels // 4
    position = np.array([0, 2, 1, 3])  # the authors' k-th slot holds (row, col) = (k % 2, k // 2): 2*row+col
    return (np.arange(c)[None, :] * 4 + position[:, None]).ravel()


def _reorder_unfold_merging(result: Adapted, sources: Dict[str, str]) -> None:
    merges = re.compile(r"layers\.\d+\.downsample\.(?:norm|reduction)\..+")
    for name in sorted(n for n in result.weights if merges.fullmatch(n)):
        value = result.weights[name]
        order = unfold_to_authors_order(value.shape[-1])
        result.weights[name] = np.ascontiguousarray(value[..., order])
        result.changed.add(name)
        result.converted.append(f"{name} <- {sources[name]} (permuted: unfold's channel order)")


def final_norm_for(weights: Dict[str, np.ndarray], source: Source, target: Mapping[str, Tuple[int, ...]]
                   ) -> List[str]:
    """mmpretrain's `norm{last}` is the classifier's final norm: moved there when the target is a classifier.
    Returns the names it moved to."""
    if not source.last_stage_norm_is_final or "norm.weight" not in target or "norm.weight" in weights:
        return []
    stages = sorted(int(m[1]) for m in (re.fullmatch(r"norm(\d+)\.weight", n) for n in weights) if m)
    if not stages:
        return []
    moved = []
    for leaf in ("weight", "bias"):
        if f"norm{stages[-1]}.{leaf}" in weights:
            weights[f"norm.{leaf}"] = weights.pop(f"norm{stages[-1]}.{leaf}")
            moved.append(f"norm.{leaf}")
    return moved


# ----------------------------------------------------------------------------------------- architecture
def architecture(weights: Mapping[str, np.ndarray], config: Optional[Mapping] = None,
                 origin: str = "checkpoint") -> Dict[str, object]:
    """The SwinClassifier arguments a checkpoint in the authors' layout implies (and its config.json states).

    img_size comes from the config, else the shifted blocks' stored masks or the absolute position
    embedding, else the size at which the last stage is one window (224 for window 7, 384 for 12).
    """
    if "patch_embed.proj.weight" not in weights or "layers.0.blocks.0.attn.relative_position_bias_table" not in weights:
        raise CheckpointKeyError(f"{origin}: none of its {len(weights)} tensors matches a Swin V1 model (its keys "
                                 f"begin {', '.join(sorted(weights)[:3])}): is it a Swin checkpoint?")
    proj = weights["patch_embed.proj.weight"]
    depths, heads, tables = [], [], []
    while f"layers.{len(depths)}.blocks.0.norm1.weight" in weights:
        stage = len(depths)
        blocks = {int(n.split(".")[3]) for n in weights if n.startswith(f"layers.{stage}.blocks.")}
        depths.append(max(blocks) + 1)
        table = weights[f"layers.{stage}.blocks.0.attn.relative_position_bias_table"]
        heads.append(int(table.shape[1]))
        tables.append((int(round(np.sqrt(table.shape[0]))) + 1) // 2)
    window, patch = tables[0], int(proj.shape[-1])
    if any(later > earlier for earlier, later in zip(tables, tables[1:])):
        raise unsupported(origin, f"a Swin with a window per stage ({', '.join(map(str, tables))}; timm's swin_s3, "
                          "AutoFormerV2?)")
    args: Dict[str, object] = {"embed_dim": int(proj.shape[0]), "depths": depths, "num_heads": heads,
                               "window_size": window, "patch_size": patch, "in_chans": int(proj.shape[1])}
    fc1 = weights.get("layers.0.blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        args["mlp_ratio"] = fc1.shape[0] / proj.shape[0]
    args["qkv_bias"] = "layers.0.blocks.0.attn.qkv.bias" in weights
    args["ape"] = "absolute_pos_embed" in weights
    args["num_classes"] = int(weights["head.weight"].shape[0]) if "head.weight" in weights else 0
    args["img_size"] = _image_size(weights, config or {}, window, patch, tables, len(depths))
    return args


def _image_size(weights: Mapping[str, np.ndarray], config: Mapping, window: int, patch: int,
                tables: List[int], stages: int) -> int:
    for size in (config.get("image_size"), (config.get("model_args") or {}).get("img_size"),
                 ((config.get("pretrained_cfg") or {}).get("input_size") or [None, None])[-1]):
        if isinstance(size, (list, tuple)):
            size = size[0]
        if isinstance(size, int) and size > 0:
            return size
    for name, mask in weights.items():  # the authors' files keep each shifted block's [nW, N, N] mask
        found = re.fullmatch(r"layers\.(\d+)\.blocks\.\d+\.attn_mask", name)
        if found and mask.ndim == 3:
            side = int(round(np.sqrt(mask.shape[0]))) * int(round(np.sqrt(mask.shape[1])))
            return side * 2 ** int(found[1]) * patch
    pos = weights.get("absolute_pos_embed")
    if pos is not None:
        side = pos.shape[-1] if pos.ndim == 4 else int(round(np.sqrt(pos.shape[1])))
        return side * patch
    if tables[-1] < window:  # the authors shrink a stage's window to its size when it is smaller
        return tables[-1] * 2 ** (stages - 1) * patch
    return window * 2 ** (stages - 1) * patch
