"""Numerical parity with the authors' PyTorch code (tests/fixtures/swin_reference), max abs diff <= 1e-4."""
import os

import numpy as np
import paddle
import pytest

from conftest import SMALL, reference_arrays, reference_case
from swin_backbone import SwinClassifier, SwinTransformer, load_pretrained

TOLERANCE = 1e-4

CASES = {
    "cls_d16_w12_384": (SwinClassifier, dict(SMALL, img_size=384, window_size=12, num_classes=10)),
    "cls_d24_p2_w4_32": (SwinClassifier, dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                                              img_size=32, patch_size=2, window_size=4, num_classes=10)),
    "cls_d16_ape_w7_224": (SwinClassifier, dict(SMALL, img_size=224, window_size=7, num_classes=10, ape=True)),
    "det_d16_w7_pad_250x333": (SwinTransformer, dict(SMALL, window_size=7, out_indices=(0, 1, 2, 3))),
    "det_d16_w12_pad_203x517": (SwinTransformer, dict(SMALL, window_size=12, out_indices=(0, 1, 2, 3))),
}


def run_case(name: str):
    """(our outputs, reference outputs) for one fixture."""
    folder = reference_case(name)
    model_cls, kwargs = CASES[name]
    model = model_cls(**kwargs)
    model.eval()
    report = load_pretrained(model, os.path.join(folder, "weights.pth"), strict=True, verbose=False)
    assert report.clean, report.summary()
    arrays = reference_arrays(name)
    x = paddle.to_tensor(arrays["input"])
    with paddle.no_grad():
        if model_cls is SwinClassifier:
            features = model.forward_features(x)
            outputs = [model.forward_head(features), features]
        else:
            outputs = model(x)
    expected = [arrays[f"out{i}"] for i in range(len(outputs))]
    assert f"out{len(outputs)}" not in arrays, "fixture has more outputs"
    return [o.numpy() for o in outputs], expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name):
    ours, expected = run_case(name)
    for i, (got, want) in enumerate(zip(ours, expected)):
        assert got.shape == want.shape, f"out{i}: shape {got.shape} != {want.shape}"
        diff = float(np.abs(got - want).max())
        print(f"{name} out{i} {got.shape}: max abs diff {diff:.2e}")
        assert diff <= TOLERANCE, f"{name} out{i}: max abs diff {diff:.2e} > {TOLERANCE}"


def test_classifier_same_result_as_logits():
    """forward == forward_head(forward_features)."""
    folder = reference_case("cls_d24_p2_w4_32")
    model = SwinClassifier(**CASES["cls_d24_p2_w4_32"][1])
    model.eval()
    load_pretrained(model, os.path.join(folder, "weights.pth"), strict=True, verbose=False)
    arrays = reference_arrays("cls_d24_p2_w4_32")
    np.testing.assert_allclose(model(paddle.to_tensor(arrays["input"])).numpy(), arrays["out0"], atol=TOLERANCE)
