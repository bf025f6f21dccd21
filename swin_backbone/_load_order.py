"""Load Pillow's image codecs before Paddle.

Paddle 2.6.2's core library exports zlib symbols of its own version. Pillow loaded after it binds its PNG
codec to those: decoding fails ("codec configuration error when reading image file"; for PaddleSeg's
ADE20K labels, a dead data-loader thread and a hung run) and encoding can crash the process. Pillow loaded
first binds to the system zlib, so this module imports it as early as the package is imported.
"""
import sys

try:
    from PIL import Image  # noqa: F401
except ImportError:  # Pillow is optional for the model itself
    pass


def pillow_loaded_after_paddle() -> bool:
    """Whether Pillow's C core was loaded after Paddle's (sys.modules keeps import order).

    Decided from the order rather than by probing a PNG, since the probe itself can crash the process.
    """
    names = list(sys.modules)
    paddle_core = next((i for i, name in enumerate(names) if name.startswith("paddle.base.libpaddle")), None)
    pillow_core = names.index("PIL._imaging") if "PIL._imaging" in sys.modules else None
    return paddle_core is not None and pillow_core is not None and pillow_core > paddle_core


def require_pillow_before_paddle() -> None:
    """Raise a clear error where Pillow was loaded after Paddle (its PNG codec is then broken)."""
    if pillow_loaded_after_paddle():
        raise ImportError(
            "paddle was imported before Pillow, so Pillow's PNG codec is bound to paddle 2.6.2's zlib and "
            "fails on PNG files. Import swin_backbone (or PIL.Image) before paddle.")
