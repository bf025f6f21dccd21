"""Named Swin architectures (the authors' released models) as tables of constructor arguments."""
from typing import Any, Dict, Optional

from .model import SwinClassifier, SwinTransformer

_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))

PRESETS: Dict[str, Dict[str, Any]] = {
    "swin_tiny_patch4_window7_224": dict(_TINY, patch_size=4, window_size=7, img_size=224),
    "swin_small_patch4_window7_224": dict(_SMALL, patch_size=4, window_size=7, img_size=224),
    "swin_base_patch4_window7_224": dict(_BASE, patch_size=4, window_size=7, img_size=224),
    "swin_base_patch4_window12_384": dict(_BASE, patch_size=4, window_size=12, img_size=384),
    "swin_large_patch4_window7_224": dict(_LARGE, patch_size=4, window_size=7, img_size=224),
    "swin_large_patch4_window12_384": dict(_LARGE, patch_size=4, window_size=12, img_size=384),
    # CIFAR-sized input: 16x16 tokens, so the last two stages run a single unshifted window.
    "swin_tiny_patch2_window4_32": dict(_TINY, patch_size=2, window_size=4, img_size=32),
}


def preset_args(name: str) -> Dict[str, Any]:
    """The classifier arguments of a preset (a copy)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def create_classifier(name: str, **overrides: Any) -> SwinClassifier:
    """A SwinClassifier for a preset; keyword arguments override the table (e.g. num_classes=10)."""
    return SwinClassifier(**{**preset_args(name), **overrides})


def create_backbone(name: str, **overrides: Any) -> SwinTransformer:
    """A multi-scale SwinTransformer for a preset (img_size becomes pretrain_img_size)."""
    args = preset_args(name)
    args["pretrain_img_size"] = args.pop("img_size")
    return SwinTransformer(**{**args, **overrides})


def create_model(name: str, backbone: bool = False, window_size: Optional[int] = None,
                 img_size: Optional[int] = None, num_classes: Optional[int] = None):
    """A preset's classifier, or with backbone=True its multi-scale backbone, with the tools' usual overrides
    (None keeps the preset's value; the backbone has no classes)."""
    overrides: Dict[str, Any] = {"window_size": window_size} if window_size else {}
    if backbone:
        if img_size:
            overrides["pretrain_img_size"] = img_size
        return create_backbone(name, **overrides)
    if img_size:
        overrides["img_size"] = img_size
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return create_classifier(name, **overrides)


def _builder(name: str):
    def build(**overrides: Any) -> SwinClassifier:
        return create_classifier(name, **overrides)

    build.__name__ = name
    build.__doc__ = f"SwinClassifier {name}: {PRESETS[name]}; keyword arguments override."
    return build


swin_tiny_patch4_window7_224 = _builder("swin_tiny_patch4_window7_224")
swin_small_patch4_window7_224 = _builder("swin_small_patch4_window7_224")
swin_base_patch4_window7_224 = _builder("swin_base_patch4_window7_224")
swin_base_patch4_window12_384 = _builder("swin_base_patch4_window12_384")
swin_large_patch4_window7_224 = _builder("swin_large_patch4_window7_224")
swin_large_patch4_window12_384 = _builder("swin_large_patch4_window12_384")
swin_tiny_patch2_window4_32 = _builder("swin_tiny_patch2_window4_32")
