"""The torch-free checkpoint reader and the converter."""
import os
import pickle
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import FIXTURES, ROOT, SMALL, reference_arrays, reference_case, require_fixture
from swin_backbone import (SwinClassifier, SwinTransformer, convert_state_dict, create_classifier, load_pretrained,
                           read_torch_checkpoint)
from swin_backbone.convert import extract_state_dict, resize_bias_table
from swin_backbone.errors import CheckpointKeyError, SwinInputError, UnsafeFileError
from torch_format import save_torch_zip

CLS_32 = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), img_size=32, patch_size=2,
              window_size=4, num_classes=10)


def reference_state(name: str) -> dict:
    return extract_state_dict(read_torch_checkpoint(os.path.join(reference_case(name), "weights.pth")))


def test_reader_gives_numpy_tensors():
    state = reference_state("det_d16_w7_pad_250x333")
    assert state["layers.0.blocks.0.attn.qkv.weight"].shape == (48, 16)  # torch [out, in]
    assert state["layers.0.blocks.0.attn.relative_position_index"].dtype == np.int64
    assert state["patch_embed.proj.weight"].shape == (16, 3, 4, 4)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    save_torch_zip(None, str(path), extra_pickle=pickle.dumps({"model": Exploit()}, protocol=2))
    with pytest.raises(UnsafeFileError, match=f"evil.pth: refusing to load {os.system.__module__}.system"):
        read_torch_checkpoint(str(path))
    assert not marker.exists()


def test_detection_checkpoint_layout(tmp_path):
    """`state_dict` with a `backbone.` prefix (the detection repo's files) loads like a classification one."""
    state = reference_state("det_d16_w7_pad_250x333")
    det = {"state_dict": {**{f"backbone.{k}": v for k, v in state.items()},
                          "neck.lateral.weight": np.ones((4, 4), np.float32)},
           "meta": {"epoch": 12, "CLASSES": ("person", "car")}}
    path = tmp_path / "mask_rcnn.pth"
    save_torch_zip(det, str(path))
    model = SwinTransformer(**SMALL, window_size=7)
    report = load_pretrained(model, str(path), strict=True, verbose=False)
    assert report.clean
    np.testing.assert_array_equal(model.layers[0].blocks[0].attn.qkv.weight.numpy(),
                                  state["layers.0.blocks.0.attn.qkv.weight"].T)


def test_key_mismatch_is_reported_by_name(tmp_path):
    state = reference_state("cls_d24_p2_w4_32")
    del state["layers.1.blocks.0.mlp.fc1.bias"]
    state["layers.9.blocks.0.extra.weight"] = np.zeros((2, 2), np.float32)
    path = tmp_path / "bad.pth"
    save_torch_zip({"model": state}, str(path))
    with pytest.raises(CheckpointKeyError) as error:
        load_pretrained(SwinClassifier(**CLS_32), str(path), strict=True)
    assert "layers.1.blocks.0.mlp.fc1.bias" in str(error.value)
    assert "layers.9.blocks.0.extra.weight" in str(error.value)
    report = load_pretrained(SwinClassifier(**CLS_32), str(path), strict=False, verbose=False)
    assert report.missing == ["layers.1.blocks.0.mlp.fc1.bias"]
    assert report.unexpected == ["layers.9.blocks.0.extra.weight"]


def test_bias_table_resize():
    table = np.random.rand(13 * 13, 3).astype("float32")
    np.testing.assert_array_equal(resize_bias_table(table, 7), table)
    assert resize_bias_table(table, 12).shape == (23 * 23, 3)
    # a constant table stays constant when resized
    np.testing.assert_allclose(resize_bias_table(np.full((169, 2), 0.5, "float32"), 12), 0.5, atol=1e-6)


def authors_bicubic(kind: str) -> dict:
    """{case: {"input", "output", "target"}} of tests/fixtures/bicubic_reference (torch's F.interpolate bicubic on
    random tables, run through the authors' own resize code), for one kind: bias, ape_cls or ape_det."""
    path = require_fixture(os.path.join(FIXTURES, "bicubic_reference", "bicubic.npz"), "bicubic reference fixture",
                           "run tests/fixtures/bicubic_reference/generate.py in a torch venv")
    cases = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            name, part = key.split("/")
            if name.startswith(kind + "_"):
                cases.setdefault(name, {})[part] = npz[key]
    assert len(cases) >= 1, f"no {kind} case in {path}"
    return cases


def test_bias_table_resize_matches_the_authors_bicubic():
    """Another window size: the converter's table equals the authors' (torch bicubic, align_corners=False)."""
    name = "layers.0.blocks.0.attn.relative_position_bias_table"
    for case, arrays in authors_bicubic("bias").items():
        expected = arrays["output"]
        converted, report = convert_state_dict({name: arrays["input"]}, {name: expected.shape})
        assert report.resized == [name], case
        diff = float(np.abs(converted[name] - expected).max())
        assert diff <= 1e-5, f"{case}: max abs diff {diff:.2e} from the authors' bicubic resize"


def test_position_embedding_resize_matches_the_authors_bicubic():
    """The classification layout [1, L, C] converted to another image size, as the authors' load_pretrained
    resizes it; and the detection layout [1, C, h, w] interpolated to the token grid in the forward pass, as
    their detection backbone does (any, also non-square, grid)."""
    for case, arrays in authors_bicubic("ape_cls").items():
        side, channels = int(arrays["target"]), arrays["input"].shape[2]
        converted, report = convert_state_dict({"absolute_pos_embed": arrays["input"]},
                                               {"absolute_pos_embed": (1, channels, side, side)})
        assert report.resized == ["absolute_pos_embed"], case
        expected = arrays["output"].reshape(1, side, side, channels).transpose(0, 3, 1, 2)
        diff = float(np.abs(converted["absolute_pos_embed"] - expected).max())
        assert diff <= 1e-5, f"{case}: max abs diff {diff:.2e} from the authors' bicubic resize"
    for case, arrays in authors_bicubic("ape_det").items():
        pos, expected = arrays["input"], arrays["output"]
        converted, _ = convert_state_dict({"absolute_pos_embed": pos}, {"absolute_pos_embed": expected.shape})
        assert float(np.abs(converted["absolute_pos_embed"] - expected).max()) <= 1e-5, case
        # the forward pass: a zero patch embedding leaves exactly the interpolated position embedding
        grid = pos.shape[2]
        model = SwinTransformer(embed_dim=pos.shape[1], depths=(1,), num_heads=(1,), out_indices=(0,), ape=True,
                                pretrain_img_size=4 * grid, patch_norm=False)
        model.eval()
        model.patch_embed.proj.weight.set_value(np.zeros(model.patch_embed.proj.weight.shape, "float32"))
        model.patch_embed.proj.bias.set_value(np.zeros(model.patch_embed.proj.bias.shape, "float32"))
        model.absolute_pos_embed.set_value(pos)
        height, width = (int(v) for v in arrays["target"])
        with paddle.no_grad():
            tokens = model.embed(paddle.zeros([1, 3, 4 * height - 1, 4 * width - 2])).numpy()
        diff = float(np.abs(tokens.transpose(0, 3, 1, 2) - expected).max())
        assert diff <= 1e-5, f"{case} (forward): max abs diff {diff:.2e} from the authors' bicubic interpolation"


def test_window_and_head_change_on_conversion():
    """A w7/224 classification checkpoint fine-tuned at w12/384 with 5 classes: tables resized, head dropped."""
    state = reference_state("cls_d16_ape_w7_224")
    model = SwinClassifier(**SMALL, img_size=384, window_size=12, num_classes=5, ape=True)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted, report = convert_state_dict(state, target)
    assert "head.weight" in report.dropped and "head.weight" in report.missing
    assert "absolute_pos_embed" in report.resized
    assert converted["absolute_pos_embed"].shape == (1, 16, 96, 96)
    assert converted["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (23 * 23, 1)
    # stage 3 (12x12 tokens at 384) runs one 12x12 window: resized too
    assert converted["layers.3.blocks.0.attn.relative_position_bias_table"].shape == (23 * 23, 4)
    model.set_state_dict(converted)
    assert model(paddle.randn([1, 3, 384, 384])).shape == [1, 5]


def test_classifier_weights_into_backbone():
    state = reference_state("cls_d16_ape_w7_224")
    model = SwinTransformer(**SMALL, window_size=7, ape=True)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted, report = convert_state_dict(state, target)
    assert sorted(report.dropped) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert report.missing == sorted(f"norm{i}.{p}" for i in range(4) for p in ("bias", "weight"))
    assert not report.unexpected


def authors_layout(model) -> dict:
    """Our state dict written back in the authors' layout (torch Linear weights are [out, in])."""
    state = {}
    for name, value in model.state_dict().items():
        value = value.numpy()
        state[name] = value.T.copy() if name.endswith(".weight") and value.ndim == 2 else value
    return state


def test_cli_converts_a_full_size_checkpoint(tmp_path):
    """Swin-T 224/w7 checkpoint -> a 384/w12 10-class model; the .pdparams alone then loads cleanly."""
    source = create_classifier("swin_tiny_patch4_window7_224")
    state = authors_layout(source)
    state["layers.0.blocks.1.attn_mask"] = np.zeros((64, 49, 49), np.float32)
    state["layers.0.blocks.0.attn.relative_position_index"] = np.zeros((49, 49), np.int64)
    pth, out = tmp_path / "swin_tiny_patch4_window7_224.pth", tmp_path / "converted.pdparams"
    save_torch_zip({"model": state}, str(pth))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"), str(pth), str(out),
         "--model", "swin_tiny_patch4_window7_224", "--window-size", "12", "--img-size", "384",
         "--num-classes", "10"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "head.weight" in result.stdout and "relative_position_bias_table" in result.stdout
    os.remove(pth)
    target = create_classifier("swin_tiny_patch4_window7_224", window_size=12, img_size=384, num_classes=10)
    report = load_pretrained(target, str(out), verbose=False)
    assert report.missing == ["head.bias", "head.weight"] and not report.unexpected
    np.testing.assert_array_equal(target.layers[2].blocks[3].mlp.fc2.weight.numpy(),
                                  source.layers[2].blocks[3].mlp.fc2.weight.numpy())
    assert target.layers[0].blocks[0].attn.relative_position_bias_table.shape == [23 * 23, 3]


def test_cli_strict_refuses_an_inexact_match(tmp_path):
    """--strict fails (and writes nothing) when the target leaves keys missing or unexpected; without it the
    file is written and the report names them."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import convert_weights

    state = authors_layout(create_classifier("swin_tiny_patch2_window4_32", num_classes=10))
    del state["layers.1.blocks.0.mlp.fc1.bias"]
    pth, out = str(tmp_path / "cifar.pth"), str(tmp_path / "cifar.pdparams")
    save_torch_zip({"model": state}, pth)
    args = [pth, out, "--model", "swin_tiny_patch2_window4_32", "--num-classes", "10"]
    with pytest.raises(CheckpointKeyError, match=f"--strict: {pth} does not match the target exactly"):
        convert_weights.main([*args, "--strict"])
    assert not os.path.exists(out)
    assert convert_weights.main(args) == 0 and os.path.isfile(out)
    report = load_pretrained(create_classifier("swin_tiny_patch2_window4_32", num_classes=10), out, verbose=False)
    assert report.missing == ["layers.1.blocks.0.mlp.fc1.bias"] and not report.unexpected


def test_cli_shape_mismatch_is_explained(tmp_path):
    folder = reference_case("det_d16_w7_pad_250x333")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"), os.path.join(folder, "weights.pth"),
         str(tmp_path / "x.pdparams"), "--model", "swin_tiny_patch4_window7_224", "--backbone"],
        capture_output=True, text=True)
    assert result.returncode != 0 and "cannot be mapped" in result.stderr
    assert not (tmp_path / "x.pdparams").exists()


def test_converted_pdparams_round_trip(tmp_path):
    folder = reference_case("cls_d16_w12_384")
    model = SwinClassifier(**SMALL, img_size=384, window_size=12, num_classes=10)
    load_pretrained(model, os.path.join(folder, "weights.pth"), strict=True, verbose=False)
    path = str(tmp_path / "w.pdparams")
    paddle.save(model.state_dict(), path)
    fresh = SwinClassifier(**SMALL, img_size=384, window_size=12, num_classes=10)
    assert load_pretrained(fresh, path, strict=True, verbose=False).clean
    fresh.eval()
    arrays = reference_arrays("cls_d16_w12_384")
    np.testing.assert_allclose(fresh(paddle.to_tensor(arrays["input"])).numpy(), arrays["out0"], atol=1e-4)


def fake_swin_keys(embed_dim, depths, heads, window=7, prefix=""):
    """The keys (tiny stand-in arrays, right shapes where read) that describe a Swin architecture."""
    keys = {f"{prefix}patch_embed.proj.weight": np.zeros((embed_dim, 3, 4, 4), np.float32)}
    for i, (depth, head) in enumerate(zip(depths, heads)):
        for j in range(depth):
            keys[f"{prefix}layers.{i}.blocks.{j}.norm1.weight"] = np.zeros(1, np.float32)
            keys[f"{prefix}layers.{i}.blocks.{j}.attn.relative_position_bias_table"] = np.zeros(
                ((2 * window - 1) ** 2, head), np.float32)
    return keys


def test_the_converter_says_what_it_was_given():
    from swin_backbone.convert import checkpoint_kind

    tiny = fake_swin_keys(96, (2, 2, 6, 2), (3, 6, 12, 24))
    assert checkpoint_kind({**tiny, "head.weight": 0, "norm.weight": 0}) == "classifier"
    assert checkpoint_kind({**tiny, "norm0.weight": 0}) == "backbone"
    det = fake_swin_keys(96, (2, 2, 6, 2), (3, 6, 12, 24), prefix="backbone.")
    assert checkpoint_kind({**det, "neck.lateral_convs.0.conv.weight": 0, "roi_head.x": 0}) == "detector"
    assert checkpoint_kind({**det, "decode_head.conv_seg.weight": 0}) == "segmenter"


def test_presets_and_configs_are_recognised_from_the_weights():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import convert_weights

    assert convert_weights.recognise_preset(fake_swin_keys(128, (2, 2, 18, 2), (4, 8, 16, 32), 12), "x") == \
        "swin_base_patch4_window12_384"
    small = fake_swin_keys(96, (2, 2, 18, 2), (3, 6, 12, 24), prefix="backbone.")
    assert convert_weights.recognise_config(small, "detector", "x").endswith("mask_rcnn_swin_small_fpn_3x_coco.yml")
    assert convert_weights.recognise_config(small, "segmenter", "x").endswith(
        "upernet_swin_small_ade20k_512x512_160k.yml")
    with pytest.raises(SwinInputError, match="give --config"):
        convert_weights.recognise_config(fake_swin_keys(16, (1, 1), (1, 1), prefix="backbone."), "detector", "x")


def test_dropped_parts_are_named(tmp_path):
    """A detection backbone's norm0..norm3 converted for a classifier, a detector's heads for a backbone."""
    state = reference_state("det_d16_w7_pad_250x333")
    classifier = SwinClassifier(**SMALL, img_size=224, window_size=7, num_classes=10)
    _, report = convert_state_dict(state, {k: tuple(v.shape) for k, v in classifier.state_dict().items()})
    assert {f"norm{i}.weight" for i in range(4)} <= set(report.dropped)
    assert any("norm0..norm3" in note for note in report.notes)
    path = str(tmp_path / "detector.pth")
    save_torch_zip({"state_dict": {**{f"backbone.{k}": v for k, v in state.items()},
                                   "rpn_head.rpn_conv.weight": np.zeros((4, 4, 3, 3), np.float32)}}, path)
    report = load_pretrained(SwinTransformer(**SMALL, window_size=7), path, verbose=False)
    assert "a full mmdetection detector" in report.summary() and "not loaded: rpn_head" in report.summary()
