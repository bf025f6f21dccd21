"""Shared fixtures: the authors' reference outputs, and the small model shapes the tests use."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import swin_backbone  # noqa: E402,F401  (before paddle: see swin_backbone/_load_order.py)
import numpy as np  # noqa: E402
import paddle  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
# The authors' reference outputs live in the repository; SWIN_REFERENCE points at another copy (either layout).
REFERENCE_DIR = os.environ.get("SWIN_REFERENCE", os.path.join(FIXTURES, "swin_reference"))

# SWIN_PADDLE_TESTS=core: only what needs neither paddledet nor paddleseg (the Paddle 3.x run of .ci/run).
CORE_ONLY = os.environ.get("SWIN_PADDLE_TESTS") == "core"
PLUGIN_TEST_FILES = ["test_det.py", "test_seg.py", "test_mm_parity.py"]
collect_ignore = PLUGIN_TEST_FILES if CORE_ONLY else []


def pytest_collection_modifyitems(config, items):
    if CORE_ONLY:
        kept = [item for item in items if item.get_closest_marker("plugins") is None]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def small_exportable_models() -> dict:
    """A SMALL window-7 backbone and a 10-class classifier at 224 (with `init_args`, to build eager twins)."""
    from swin_backbone import SwinClassifier, SwinTransformer

    models = {}
    for task, make, args in (("backbone", SwinTransformer, dict(SMALL, window_size=7)),
                             ("cls", SwinClassifier, dict(SMALL, img_size=224, window_size=7, num_classes=10, ape=True))):
        models[task] = make(**args)
        models[task].init_args = args
    return models


def by_score(end2end: dict):
    """A detector's rows [label, score, box] and masks, highest score first (stable); and that order."""
    bbox = np.array(end2end["bbox"])
    order = np.argsort(-bbox[:, 1], kind="stable")
    return bbox[order], np.array(end2end["mask"], np.uint8)[order], order


# The RPN of the mmdetection fixtures' detectors (the authors' anchors and test proposals), for the smoke configs
# the parity tests build on.
AUTHORS_RPN_YAML = """RPNHead:
  anchor_generator:
    aspect_ratios: [0.5, 1.0, 2.0]
    anchor_sizes: [[32], [64], [128], [256], [512]]
    strides: [4, 8, 16, 32, 64]
  test_proposal:
    min_size: 0.0
    nms_thresh: 0.7
    pre_nms_top_n: 1000
    post_nms_top_n: 1000"""


def require_fixture(path: str, what: str, hint: str) -> str:
    """`path`; fails (never skips) when that fixture is absent."""
    if not os.path.exists(path):
        pytest.fail(f"{what} missing: {os.path.abspath(path)} ({hint})")
    return path


def reference_case(name: str) -> str:
    """Path of one reference case of the authors' outputs."""
    return require_fixture(os.path.join(REFERENCE_DIR, name), "reference fixtures",
                           "set SWIN_REFERENCE to their folder")


def reference_arrays(name: str) -> dict:
    """{"input": ..., "out0": ..., ...} of one reference case (arrays.npz in the repository, *.npy elsewhere)."""
    from fixtures.swin_reference.pack import case_arrays

    arrays = case_arrays(reference_case(name))
    if "input" not in arrays or "out0" not in arrays:
        pytest.fail(f"reference case {name} has no input/out0 arrays in {reference_case(name)}")
    return arrays


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
    paddle.set_device("cpu")
