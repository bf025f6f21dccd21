"""Other libraries' Swin checkpoints: recognised from the file, converted, and computing what the library computes.

The fixtures (tests/fixtures/other_libraries, made by their generate.py in a throwaway venv) are files saved by
transformers, timm (>= 0.9 and 0.6), torchvision and mmpretrain themselves, with those libraries' outputs.
"""
import os
import sys

import numpy as np
import paddle
import pytest

from conftest import FIXTURES, ROOT, require_fixture
from swin_backbone import SwinClassifier, SwinTransformer, load_pretrained

sys.path.insert(0, os.path.join(FIXTURES, "other_libraries"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from inputs import image_batch  # noqa: E402

TOLERANCE = 1e-4
ARCH = dict(embed_dim=6, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2))
# What each library's fixture file is called and the first line of the report for it
SOURCES = {
    "hf_classifier": "a Hugging Face transformers Swin (SwinForImageClassification), safetensors with config.json: "
                     "a Swin classifier (head and final norm) for 10 classes",
    "hf_backbone": "a Hugging Face transformers Swin (SwinBackbone), safetensors with config.json: a Swin "
                   "detection/segmentation backbone",
    "timm_hub": "a timm >= 0.9 Swin (swin_tiny_patch4_window7_224), safetensors with config.json: a Swin classifier",
    "timm_w12_384.pth": "a timm >= 0.9 Swin, a torch.save file: a Swin classifier",
    "timm06_swin.pth": "the authors' layout (their releases, detection and segmentation repositories; timm < 0.9), "
                       "a torch.save file: a Swin classifier",
    "torchvision_swin.pth": "a torchvision Swin, a torch.save file: a Swin classifier",
    "mmpretrain_swin.pth": "an mmpretrain / mmcls Swin, a torch.save file: a Swin classifier",
}


def fixture(name: str) -> str:
    return require_fixture(os.path.join(FIXTURES, "other_libraries", name), "other-library fixtures",
                           "made by tests/fixtures/other_libraries/generate.py")


def outputs(library: str) -> dict:
    with np.load(fixture(f"{library}_outputs.npz")) as arrays:
        return {name: arrays[name] for name in arrays.files}


def classifier(path: str, img_size: int = 224, window_size: int = 7) -> SwinClassifier:
    model = SwinClassifier(**ARCH, window_size=window_size, img_size=img_size, num_classes=10)
    report = load_pretrained(model, path, strict=True, verbose=False)
    assert report.clean and report.matched > 0
    model.eval()
    return model


def backbone(path: str) -> SwinTransformer:
    model = SwinTransformer(**ARCH, window_size=7)
    assert load_pretrained(model, path, strict=True, verbose=False).clean
    model.eval()
    return model


def logits(model, height: int, width: int) -> np.ndarray:
    with paddle.no_grad():
        return model(paddle.to_tensor(image_batch(2, height, width))).numpy()


def features(model, height: int, width: int) -> list:
    with paddle.no_grad():
        return [f.numpy() for f in model(paddle.to_tensor(image_batch(1, height, width, salt=1)))]


def stages(model: SwinClassifier) -> list:
    """The trunk's stage outputs before any norm, NCHW (what timm's forward_intermediates and torchvision's
    features.1/3/5/7 give)."""
    with paddle.no_grad():
        out = model.forward_stages(paddle.to_tensor(image_batch(1, 224, 224, salt=1)))
    return [o.numpy().transpose(0, 3, 1, 2) for o in out]


def worst(ours, theirs) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("size", [(224, 224), (201, 211)])
def test_hugging_face_classifier_logits(size):
    """A save_pretrained folder (config.json + model.safetensors): q, k, v merged; HF pads like the authors."""
    expected = outputs("hf")[f"cls_{size[0]}x{size[1]}"]
    assert worst([logits(classifier(fixture("hf_classifier")), *size)], [expected]) <= TOLERANCE


@pytest.mark.parametrize("size", [(224, 224), (201, 211)])
def test_hugging_face_backbone_features(size):
    """SwinBackbone (always_partition: shifted windows at every stage, as the authors' detection backbone)."""
    arrays = outputs("hf")
    expected = [arrays[f"features_{size[0]}x{size[1]}_{i}"] for i in range(4)]
    assert worst(features(backbone(fixture("hf_backbone")), *size), expected) <= TOLERANCE


def test_timm_logits_and_stages():
    """timm >= 0.9 safetensors folder: merges moved back to the end of their stages, head.fc -> head."""
    arrays = outputs("timm")
    model = classifier(fixture("timm_hub"))
    assert worst([logits(model, 224, 224)], [arrays["cls_224x224"]]) <= TOLERANCE
    # strict_img_size=False at 224x336: every shifted stage is whole windows, so timm's shift-before-pad agrees
    assert worst([logits(model, 224, 336)], [arrays["cls_224x336"]]) <= TOLERANCE
    assert worst(stages(model), [arrays[f"stages_224x224_{i}"] for i in range(4)]) <= TOLERANCE


def test_timm_features_only_model(tmp_path):
    """timm's features_only=True model names its stages layers_N and has no final norm or head."""
    from swin_backbone.convert import read_source
    from swin_backbone.safe_load import read_safetensors
    from torch_format import save_torch_zip

    tensors = read_safetensors(fixture("timm_hub/model.safetensors"))[0]
    features_only = {name.replace("layers.", "layers_", 1): value for name, value in tensors.items()
                     if not name.startswith(("norm.", "head."))}
    path = str(tmp_path / "features_only.pth")
    save_torch_zip(features_only, path)
    assert read_source(path).source.key == "timm"
    model = SwinClassifier(**ARCH, window_size=7, img_size=224, num_classes=10)
    report = load_pretrained(model, path, verbose=False)
    assert report.missing == ["head.bias", "head.weight", "norm.bias", "norm.weight"] and not report.unexpected
    model.eval()
    arrays = outputs("timm")
    assert worst(stages(model), [arrays[f"stages_224x224_{i}"] for i in range(4)]) <= TOLERANCE


def test_timm_torch_save_window_12_at_384():
    model = classifier(fixture("timm_w12_384.pth"), img_size=384, window_size=12)
    assert worst([logits(model, 384, 384)], [outputs("timm")["w12_cls_384x384"]]) <= TOLERANCE


def test_timm_before_0_9_is_the_authors_layout():
    """timm 0.6.13's torch.save: merges at the end of a stage, `head`, stored masks; the last stage (2x2 at
    64 px) is smaller than the window, whose size shrinks to 2 (the authors' rule)."""
    model = classifier(fixture("timm06_swin.pth"), img_size=64, window_size=4)
    assert model.layers[3].window_size == 2
    assert worst([logits(model, 64, 64)], [outputs("timm")["timm06_cls_64x64"]]) <= TOLERANCE


@pytest.mark.parametrize("size", [(224, 224), (200, 212)])
def test_torchvision_logits(size):
    """features.N.M renamed; torchvision pads windows like the authors when the size divides into patches."""
    expected = outputs("torchvision")[f"cls_{size[0]}x{size[1]}"]
    assert worst([logits(classifier(fixture("torchvision_swin.pth")), *size)], [expected]) <= TOLERANCE


def test_torchvision_stages():
    arrays = outputs("torchvision")
    model = classifier(fixture("torchvision_swin.pth"))
    assert worst(stages(model), [arrays[f"stages_224x224_{i}"] for i in range(4)]) <= TOLERANCE


@pytest.mark.parametrize("size", [(224, 224), (201, 211)])
def test_mmpretrain_logits(size):
    """{'meta', 'state_dict'}: unfold-ordered patch merging permuted back, norm3 as the final norm."""
    expected = outputs("mmpretrain")[f"cls_{size[0]}x{size[1]}"]
    assert worst([logits(classifier(fixture("mmpretrain_swin.pth")), *size)], [expected]) <= TOLERANCE


@pytest.mark.parametrize("size", [(224, 224), (201, 211)])
def test_mmpretrain_backbone_features(size):
    """The same file as a backbone (norm0..norm3); mmpretrain run with pad_small_map=True, its detection setting."""
    arrays = outputs("mmpretrain")
    expected = [arrays[f"features_{size[0]}x{size[1]}_{i}"] for i in range(4)]
    assert worst(features(backbone(fixture("mmpretrain_swin.pth")), *size), expected) <= TOLERANCE


# ------------------------------------------------------------- where the libraries and ours differ, and why
def test_where_hugging_face_and_mmpretrain_decide_the_shift_per_call():
    """At 256 the last stage is 8x8, larger than the window: HF and mmpretrain shift it there. Our classifier
    fixes windows and shifts from img_size when it is built (the authors' rule): built for 224 it does not
    shift its last stage; built for 256 it does, and then agrees."""
    for library, path in (("hf", "hf_classifier"), ("mmpretrain", "mmpretrain_swin.pth")):
        expected = outputs(library)["cls_256x256"]
        assert worst([logits(classifier(fixture(path)), 256, 256)], [expected]) > 1e-2
        assert worst([logits(classifier(fixture(path), img_size=256), 256, 256)], [expected]) <= TOLERANCE


def test_where_torchvision_crops():
    """torchvision's patch embedding crops 201x211 to 200x208 (a strided conv without padding); ours pads."""
    model = classifier(fixture("torchvision_swin.pth"))
    expected = outputs("torchvision")["cls_201x211"]
    assert worst([logits(model, 201, 211)], [expected]) > 1e-2
    with paddle.no_grad():
        cropped = model(paddle.to_tensor(image_batch(2, 201, 211)[:, :, :200, :208])).numpy()
    assert worst([cropped], [expected]) <= TOLERANCE


def test_where_torchvision_drops_the_shift_per_axis():
    """torchvision drops a stage's shift along an axis whose padded size fits one window, per call: at 256 it
    shifts the 8x8 last stage (as ours built for 256), at 224x448 it shifts the 7x14 one along its width only
    (as none of ours)."""
    arrays = outputs("torchvision")
    path = fixture("torchvision_swin.pth")
    assert worst([logits(classifier(path), 256, 256)], [arrays["cls_256x256"]]) > 1e-2
    assert worst([logits(classifier(path, img_size=256), 256, 256)], [arrays["cls_256x256"]]) <= TOLERANCE
    for img_size in (224, 448):
        assert worst([logits(classifier(path, img_size=img_size), 224, 448)], [arrays["cls_224x448"]]) > 1e-2


def test_where_timm_shifts_before_padding():
    """At 200x212 (50x53 tokens) or 256 (64x64) timm's dynamic-size model rolls before it pads a shifted stage;
    the authors pad first. No weight change, and no img_size of ours, can absorb that."""
    arrays = outputs("timm")
    assert worst([logits(classifier(fixture("timm_hub")), 200, 212)], [arrays["cls_200x212"]]) > 1e-2
    for img_size in (224, 256):
        assert worst([logits(classifier(fixture("timm_hub"), img_size=img_size), 256, 256)],
                     [arrays["cls_256x256"]]) > 1e-2


def test_fixtures_are_the_generated_bytes():
    """The files are exactly what generate.py wrote from the libraries (SHA256SUMS): never regenerated by us."""
    import hashlib

    folder = os.path.dirname(fixture("SHA256SUMS"))
    listed = [line.split("  ", 1) for line in open(fixture("SHA256SUMS")).read().splitlines() if line]
    assert len(listed) == 14
    for digest, name in listed:
        with open(os.path.join(folder, name), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest, name
