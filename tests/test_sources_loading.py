"""Every source through the converter and the tools: what the report says first, the authors' other releases,
folders and shards, what is not supported (and the one line a user then gets), and what every load leaves at
initialisation (--strict: failing instead)."""
import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout

import numpy as np
import paddle
import pytest

from conftest import ROOT
from swin_backbone import (CheckpointKeyError, SwinClassifier, SwinTransformer, create_classifier,
                           load_pretrained)
from swin_backbone.convert import check_fill, imagenet_22k_to_1k, read_source, strict_loads
from swin_backbone.safe_load import read_safetensors
from synthetic_data import write_ade20k, write_coco
from test_safety import assert_one_line_error, run
from test_sources import ARCH, SOURCES, fixture, logits, outputs, worst
from test_sources_safetensors import write as write_safetensors
from torch_format import save_torch_zip

sys.path.insert(0, os.path.join(ROOT, "tools"))
import convert_weights  # noqa: E402

TINY = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=4, img_size=64)


def authors_state(model) -> dict:
    """A model's weights in the authors' (torch) layout, as their releases store them."""
    return {name: (value.numpy().T.copy() if name.endswith(".weight") and value.ndim == 2 else value.numpy())
            for name, value in model.state_dict().items()}


def loaded(model, path, **kwargs):
    """(the report, everything load_pretrained printed)."""
    printed = io.StringIO()
    with redirect_stdout(printed):
        report = load_pretrained(model, str(path), **kwargs)
    return report, printed.getvalue()


def convert_in_process(*argv) -> str:
    printed = io.StringIO()
    with redirect_stdout(printed):
        convert_weights.main([str(a) for a in argv])
    return printed.getvalue()


# ------------------------------------------------------------------------------- the report's first line
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_first_line_names_the_source(name, tmp_path):
    first = convert_in_process(fixture(name), tmp_path / "out.pdparams").splitlines()[0]
    assert first.startswith(f"{fixture(name)}: found {SOURCES[name]}"), first


def test_the_converter_builds_the_implied_model_and_it_computes_what_hugging_face_does(tmp_path):
    """No preset has the fixture's architecture: the tool builds the one config.json and the shapes imply, and
    the written .pdparams alone reproduces HF's logits."""
    out = tmp_path / "hf.pdparams"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"),
                           fixture("hf_classifier"), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "target: SwinClassifier(embed_dim=6, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2], patch_size=4, " \
           "in_chans=3, window_size=7, img_size=224, num_classes=10)" in proc.stdout, proc.stdout
    assert "converted: 16:" in proc.stdout and "{query,key,value}" in proc.stdout
    model = SwinClassifier(**ARCH, window_size=7, img_size=224, num_classes=10)
    assert load_pretrained(model, str(out), strict=True, verbose=False).clean
    model.eval()
    assert worst([logits(model, 224, 224)], [outputs("hf")["cls_224x224"]]) <= 1e-4


def test_presets_are_picked_from_what_the_checkpoint_implies():
    def arch(embed, depths, heads, window, img, classes=1000):
        return dict(embed_dim=embed, depths=list(depths), num_heads=list(heads), window_size=window, patch_size=4,
                    img_size=img, num_classes=classes)

    base = ((2, 2, 18, 2), (4, 8, 16, 32))
    assert convert_weights.implied_target(arch(96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224)) == \
        ("swin_tiny_patch4_window7_224", {})
    assert convert_weights.implied_target(arch(128, *base, 12, 384)) == ("swin_base_patch4_window12_384", {})
    # SimMIM's pre-training: Swin-B at window 6, 192 px: the base preset with the checkpoint's window and size
    assert convert_weights.implied_target(arch(128, *base, 6, 192)) == \
        ("swin_base_patch4_window7_224", {"window_size": 6, "img_size": 192})
    assert convert_weights.implied_target(arch(192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 384, 21841)) == \
        ("swin_large_patch4_window12_384", {})
    assert convert_weights.implied_target(arch(16, (1, 1), (1, 1), 7, 224))[0] is None


# --------------------------------------------------------------------------- the authors' other releases
def test_simmim_pre_training_checkpoint(tmp_path):
    """{'model': encoder.* + mask token + pixel decoder}: the encoder is the Swin; the rest is dropped, saying why."""
    source = SwinClassifier(**TINY, num_classes=0)
    state = {f"encoder.{k}": v for k, v in authors_state(source).items()}
    state.update({"encoder.mask_token": np.zeros((1, 1, 8), np.float32),
                  "decoder.0.weight": np.zeros((48, 64, 1, 1), np.float32), "decoder.0.bias": np.zeros(48, np.float32)})
    path = tmp_path / "simmim_pretrain.pth"
    save_torch_zip({"model": state, "epoch": 99}, str(path))
    target = SwinClassifier(**TINY, num_classes=5)
    report, printed = loaded(target, path)
    assert "found the authors' SimMIM pre-training checkpoint (encoder. prefix)" in printed.splitlines()[1]
    assert report.reasons["encoder.mask_token"].startswith("SimMIM's mask token")
    assert report.reasons["decoder.0.weight"].startswith("SimMIM's pixel decoder")
    assert report.missing == ["head.bias", "head.weight"] and not report.unexpected
    np.testing.assert_array_equal(target.layers[1].blocks[1].attn.qkv.weight.numpy(),
                                  source.layers[1].blocks[1].attn.qkv.weight.numpy())


def test_moby_checkpoint(tmp_path):
    """MoBY (Transformer-SSL): the online encoder is the Swin; momentum encoder, projectors, predictor, queues go."""
    source = SwinClassifier(**TINY, num_classes=0)
    online = authors_state(source)
    state = {f"encoder.{k}": v for k, v in online.items()}
    state.update({f"encoder_k.{k}": v + 1 for k, v in online.items()})
    state.update({"projector.linear_out.weight": np.zeros((256, 4096), np.float32),
                  "projector_k.linear_out.weight": np.zeros((256, 4096), np.float32),
                  "predictor.linear_out.weight": np.zeros((256, 4096), np.float32),
                  "queue1": np.zeros((256, 16), np.float32), "queue2": np.zeros((256, 16), np.float32),
                  "queue_ptr": np.zeros(1, np.int64)})
    path = tmp_path / "moby_swin_t_300ep_pretrained.pth"
    save_torch_zip({"model": state}, str(path))
    target = SwinTransformer(**{k: v for k, v in TINY.items() if k != "img_size"})
    report, printed = loaded(target, path)
    assert "the authors' MoBY self-supervised checkpoint" in printed
    assert "MoBY's momentum (key) encoder" in report.reasons["encoder_k.patch_embed.proj.weight"]
    assert "MoBY's queue" in report.reasons["queue_ptr"]
    assert "projection" in report.reasons["projector.linear_out.weight"]
    assert report.missing == [f"norm{i}.{p}" for i in range(4) for p in ("bias", "weight")]
    np.testing.assert_array_equal(target.patch_embed.proj.weight.numpy(), source.patch_embed.proj.weight.numpy())


@pytest.mark.parametrize("wrap", ["model", "state_dict", "bare", "ddp"])
def test_the_authors_files_in_every_wrapping(tmp_path, wrap):
    source = SwinClassifier(**TINY, num_classes=3)
    state = authors_state(source)
    if wrap == "ddp":  # what DistributedDataParallel's state_dict() gives
        checkpoint = {"model": {f"module.{k}": v for k, v in state.items()}}
    else:
        checkpoint = state if wrap == "bare" else {wrap: state, "epoch": 3}
    save_torch_zip(checkpoint, str(tmp_path / "w.pth"))
    target = SwinClassifier(**TINY, num_classes=3)
    report, printed = loaded(target, tmp_path / "w.pth", strict=True)
    assert report.clean and ("DistributedDataParallel" in printed) == (wrap == "ddp")
    np.testing.assert_array_equal(target.head.weight.numpy(), source.head.weight.numpy())


def test_imagenet_22k_heads(tmp_path):
    """21,841 classes: kept for a 21,841-class model, mapped to ImageNet-1K's 1,000 by the authors' class map,
    dropped (saying so) for any other count."""
    classes = imagenet_22k_to_1k()
    assert classes.shape == (1000,) and len(set(classes.tolist())) == 1000 and classes.max() < 21841
    state = authors_state(SwinClassifier(**TINY, num_classes=0))
    rng = np.random.default_rng(0)
    state["head.weight"] = rng.standard_normal((21841, 64)).astype(np.float32)
    state["head.bias"] = rng.standard_normal(21841).astype(np.float32)
    path = tmp_path / "swin_22k.pth"
    save_torch_zip({"model": state}, str(path))
    model = SwinClassifier(**TINY, num_classes=1000)
    report, printed = loaded(model, path)
    assert "for 21,841 classes (ImageNet-22K)" in printed and report.clean
    assert any("ImageNet-22K's 21,841 classes -> ImageNet-1K's 1,000" in c for c in report.converted)
    np.testing.assert_array_equal(model.head.weight.numpy(), state["head.weight"][classes].T)
    np.testing.assert_array_equal(model.head.bias.numpy(), state["head.bias"][classes])
    report, _ = loaded(SwinClassifier(**TINY, num_classes=10), path)
    assert report.missing == ["head.bias", "head.weight"] and "another number of classes" in report.summary()
    report, _ = loaded(SwinClassifier(**TINY, num_classes=21841), path)
    assert report.clean and not report.converted


# ---------------------------------------------------------------------------------- folders, .bin, shards
def test_a_hugging_face_folder_with_pytorch_model_bin(tmp_path):
    """The same model as model.safetensors, as transformers' older pytorch_model.bin (a torch zip)."""
    folder = tmp_path / "swin-hf"
    folder.mkdir()
    shutil.copy(fixture("hf_classifier/config.json"), folder / "config.json")
    save_torch_zip(read_safetensors(fixture("hf_classifier/model.safetensors"))[0], str(folder / "pytorch_model.bin"))
    model = SwinClassifier(**ARCH, window_size=7, img_size=224, num_classes=10)
    report, printed = loaded(model, folder, strict=True)
    assert "Swin (SwinForImageClassification), a torch.save file with config.json" in printed
    model.eval()
    assert worst([logits(model, 224, 224)], [outputs("hf")["cls_224x224"]]) <= 1e-4


def test_transformers_5_names_and_masked_image_modeling(tmp_path):
    """The names transformers 5 uses in memory (its conversion_mapping's "swin" renames), and the SimMIM model's
    mask token and decoder, which a backbone has no use for."""
    tensors = read_safetensors(fixture("hf_classifier/model.safetensors"))[0]
    renames = [("attention.self.query", "attention.q_proj"), ("attention.self.key", "attention.k_proj"),
               ("attention.self.value", "attention.v_proj"), ("attention.output.dense", "attention.o_proj"),
               ("attention.self.relative_position_bias_table",
                "attention.relative_position_bias.relative_position_bias_table"),
               ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2")]
    new = {}
    for name, value in tensors.items():
        for old, ours in renames:
            name = name.replace(old, ours)
        new[name] = value
    save_torch_zip(new, str(tmp_path / "hf5.bin"))
    model = SwinClassifier(**ARCH, window_size=7, img_size=224, num_classes=10)
    assert loaded(model, tmp_path / "hf5.bin", strict=True)[0].clean
    model.eval()
    assert worst([logits(model, 224, 224)], [outputs("hf")["cls_224x224"]]) <= 1e-4
    folder = tmp_path / "swin-simmim"
    folder.mkdir()
    config = json.load(open(fixture("hf_classifier/config.json")))
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["SwinForMaskedImageModeling"])))
    masked = {k: v for k, v in tensors.items() if not k.startswith("classifier.")}
    masked.update({"swin.embeddings.mask_token": np.zeros((1, 1, 6), np.float32),
                   "decoder.0.weight": np.zeros((3072, 48, 1, 1), np.float32), "decoder.0.bias": np.zeros(3072, np.float32)})
    write_safetensors(folder / "model.safetensors", masked)
    report, printed = loaded(SwinTransformer(**ARCH, window_size=7), folder)
    assert "(SwinForMaskedImageModeling)" in printed.splitlines()[1]
    assert report.reasons["swin.embeddings.mask_token"].startswith("SimMIM's mask token")
    assert report.reasons["decoder.0.bias"].startswith("SimMIM's pixel decoder") and not report.unexpected


def test_an_mmdetection_zoo_detector_converts_its_backbone(tmp_path):
    """mmdetection's own Swin has mmpretrain's layout: its backbone converts, its neck and heads are named as
    dropped rather than unexpected."""
    from swin_backbone.safe_load import read_torch_checkpoint

    state = dict(read_torch_checkpoint(fixture("mmpretrain_swin.pth"))["state_dict"])
    del state["head.fc.weight"], state["head.fc.bias"]
    state.update({"neck.lateral_convs.0.conv.weight": np.zeros((4, 6, 1, 1), np.float32),
                  "rpn_head.rpn_conv.weight": np.zeros((4, 4, 3, 3), np.float32)})
    save_torch_zip({"meta": {}, "state_dict": state}, str(tmp_path / "mask_rcnn_swin.pth"))
    report, _ = loaded(SwinTransformer(**ARCH, window_size=7), tmp_path / "mask_rcnn_swin.pth", strict=True)
    assert report.clean and "only the backbone converts" in report.reasons["rpn_head.rpn_conv.weight"]


def test_a_sharded_safetensors_folder(tmp_path):
    tensors = read_safetensors(fixture("timm_hub/model.safetensors"))[0]
    names = sorted(tensors)
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(fixture("timm_hub/config.json"), folder / "config.json")
    shards = {"model-00001-of-00002.safetensors": names[:40], "model-00002-of-00002.safetensors": names[40:]}
    for shard, part in shards.items():
        write_safetensors(folder / shard, {n: tensors[n] for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: shard for shard, part in shards.items() for n in part}}))
    model = SwinClassifier(**ARCH, window_size=7, img_size=224, num_classes=10)
    assert loaded(model, folder, strict=True)[0].clean
    model.eval()
    assert worst([logits(model, 224, 224)], [outputs("timm")["cls_224x224"]]) <= 1e-4


def test_a_folder_without_weights_is_explained(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        read_source(str(tmp_path))


# ------------------------------------------------------------------------------------------ not supported
def test_swin_v2_and_other_families_get_one_line(tmp_path):
    """The errors the README quotes, exactly."""
    v2 = tmp_path / "swinv2_tiny.pth"
    save_torch_zip({"model": {"layers.0.blocks.0.attn.cpb_mlp.0.weight": np.zeros((512, 2), np.float32),
                              "layers.0.blocks.0.attn.logit_scale": np.zeros((3, 1, 1), np.float32),
                              "patch_embed.proj.weight": np.zeros((96, 3, 4, 4), np.float32)}}, str(v2))
    line = assert_one_line_error(run("convert_weights.py", str(v2), str(tmp_path / "o.pdparams")))
    assert line == (f"error: {v2}: a Swin Transformer V2 checkpoint (it holds cpb_mlp, logit_scale), which is not "
                    "supported: only Swin Transformer V1 checkpoints (tiny/small/base/large, window 7 or 12) load")
    folder = tmp_path / "swinv2-tiny-patch4-window8-256"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "swinv2"}))
    write_safetensors(folder / "model.safetensors", {"swinv2.embeddings.norm.weight": np.ones(96, np.float32)})
    with pytest.raises(Exception) as error:
        read_source(str(folder))
    assert str(error.value) == (f"{folder}: config.json says model_type 'swinv2' (Swin Transformer V2), which is not "
                                "supported: only Swin Transformer V1 checkpoints (tiny/small/base/large, window 7 or "
                                "12) load")
    resnet = tmp_path / "resnet50.pth"
    save_torch_zip({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.weight": np.zeros((10, 64), np.float32)},
                   str(resnet))
    line = assert_one_line_error(run("convert_weights.py", str(resnet), str(tmp_path / "o.pdparams")))
    assert line == (f"error: {resnet}: none of its 2 tensors matches a Swin V1 model (its keys begin conv1.weight, "
                    "fc.weight): is it a Swin checkpoint?")
    s3 = {"patch_embed.proj.weight": np.zeros((96, 3, 4, 4), np.float32)}
    for stage, window in enumerate((7, 7, 14, 7)):
        s3[f"layers.{stage}.blocks.0.norm1.weight"] = np.zeros(1, np.float32)
        s3[f"layers.{stage}.blocks.0.attn.relative_position_bias_table"] = np.zeros(((2 * window - 1) ** 2, 3),
                                                                                     np.float32)
    save_torch_zip(s3, str(tmp_path / "swin_s3_tiny_224.pth"))
    line = assert_one_line_error(run("convert_weights.py", str(tmp_path / "swin_s3_tiny_224.pth"),
                                     str(tmp_path / "o.pdparams")))
    assert line.endswith("swin_s3_tiny_224.pth: a Swin with a window per stage (7, 7, 14, 7; timm's swin_s3, "
                         "AutoFormerV2?), which is not supported: only Swin Transformer V1 checkpoints "
                         "(tiny/small/base/large, window 7 or 12) load"), line
    vit = tmp_path / "vit-base"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    write_safetensors(vit / "model.safetensors", {"vit.embeddings.cls_token": np.ones((1, 1, 8), np.float32)})
    line = assert_one_line_error(run("convert_weights.py", str(vit), str(tmp_path / "o.pdparams")))
    assert line == (f"error: {vit}: config.json says model_type 'vit', which is not supported: only Swin "
                    "Transformer V1 checkpoints (tiny/small/base/large, window 7 or 12) load")


# --------------------------------------------------------------------- what every load leaves at initialisation
def classifier_file(tmp_path) -> str:
    path = str(tmp_path / "classifier.pdparams")
    paddle.save(SwinClassifier(**TINY, num_classes=3).state_dict(), path)
    return path


def test_load_pretrained_says_what_it_left_and_strict_refuses(tmp_path):
    path = classifier_file(tmp_path)
    model = SwinTransformer(**{k: v for k, v in TINY.items() if k != "img_size"})
    before = model.norm2.weight.numpy().copy()
    report, printed = loaded(model, path)
    assert ("missing (left at initialisation): 8: norm0.bias, norm0.weight, norm1.bias, norm1.weight, norm2.bias, "
            "norm2.weight, norm3.bias, norm3.weight") in printed
    with pytest.raises(CheckpointKeyError, match="left at initialisation.*norm0.bias"):
        load_pretrained(SwinTransformer(**{k: v for k, v in TINY.items() if k != "img_size"}), path, strict=True)
    with strict_loads(), pytest.raises(CheckpointKeyError, match="strict"):
        load_pretrained(SwinTransformer(**{k: v for k, v in TINY.items() if k != "img_size"}), path)
    np.testing.assert_array_equal(model.norm2.weight.numpy(), before)


def test_whole_model_files_say_what_they_leave(tmp_path):
    """check_fill: for the .pdparams that PaddleDetection / PaddleSeg load themselves."""
    model = SwinClassifier(**TINY, num_classes=3)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    del state["head.bias"]
    state["head.weight"] = np.zeros((64, 4), np.float32)
    path = str(tmp_path / "whole.pdparams")
    paddle.save(state, path)
    printed = io.StringIO()
    with redirect_stdout(printed):
        report = check_fill(model, path, "weights")
    assert report.missing == ["head.weight", "head.bias"]
    assert printed.getvalue().strip() == (f"[swin_backbone] weights {path}: 2 tensors of the model are not in the file "
                                          "and keep their initial values: head.weight, head.bias")
    with pytest.raises(CheckpointKeyError, match="--strict: weights .* leaves 2 tensors"):
        check_fill(model, path, "weights", strict=True)
    state["head.weight"], state["head.bias"] = np.zeros((64, 3), np.float32), np.zeros(3, np.float32)
    paddle.save(state, path)
    assert "every tensor of the model was loaded" in (check_fill(model, path, verbose=False).left_at_initialisation())


def test_export_says_what_it_left_and_fails_with_strict(tmp_path):
    """export.py --task backbone with classifier weights: norm0..norm3 named; --strict refuses in one line."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import export

    weights = str(tmp_path / "cls.pdparams")
    paddle.save(create_classifier("swin_tiny_patch2_window4_32", num_classes=10).state_dict(), weights)
    args = ["--task", "backbone", "--model", "swin_tiny_patch2_window4_32", "--weights", weights,
            "--output", str(tmp_path / "out")]
    parser_args = export_args(export, args)
    printed = io.StringIO()
    with redirect_stdout(printed):
        export.build(parser_args)
    assert "missing (left at initialisation): 8: norm0.bias, norm0.weight" in printed.getvalue()
    line = assert_one_line_error(run("export.py", *args, "--strict"))
    assert "cls.pdparams does not match the model (strict)" in line and "norm3.weight" in line
    assert not os.path.exists(tmp_path / "out" / "export.json")


def export_args(export, argv):
    """export.py's parsed arguments, without exporting."""
    captured = {}

    def stop(args):
        captured["args"] = args
        raise SystemExit(0)

    original = export.build
    export.build = stop
    try:
        with pytest.raises(SystemExit):
            export.main(argv)
    finally:
        export.build = original
    return captured["args"]


def test_cls_train_strict_pretrained(tmp_path):
    weights = str(tmp_path / "backbone.pdparams")
    paddle.save(SwinTransformer(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), patch_size=2,
                                window_size=4).state_dict(), weights)
    proc = run("cls_train.py", "--synthetic", "--epochs", "1", "--embed-dim", "16", "--depths", "1,1,1,1",
               "--num-heads", "1,1,2,2", "--pretrained", weights, "--strict", "--output", str(tmp_path / "run"))
    line = assert_one_line_error(proc)
    assert "backbone.pdparams does not match the model (strict)" in line and "head.weight" in line


@pytest.mark.plugins
def test_segmentation_and_detection_tools_strict(tmp_path):
    """--model_path / weights that leave tensors of the model at their initial values are refused with --strict."""
    partial = str(tmp_path / "partial.pdparams")
    paddle.save({"backbone.patch_embed.proj.weight": np.zeros(1, np.float32)}, partial)
    ade = os.path.join(write_ade20k(str(tmp_path / "ade"), splits=(("validation", 1),)), "ADEChallengeData2016")
    proc = run("seg_eval.py", "--config", os.path.join(ROOT, "seg_configs", "upernet_swin_smoke.yml"),
               "--model_path", partial, "--strict", "--opts", f"val_dataset.dataset_root={ade}")
    line = assert_one_line_error(proc)
    assert "--strict: --model_path" in line and "partial.pdparams leaves" in line and "tensors of the model" in line
    coco = write_coco(str(tmp_path / "coco"), splits=(("val", 1),))
    proc = run("det_eval.py", "-c", os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml"), "--strict",
               "-o", f"weights={partial}", f"EvalDataset.dataset_dir={coco}")
    line = assert_one_line_error(proc)
    assert "--strict: weights" in line and "partial.pdparams leaves" in line


# ----------------------------------------------------------------- training checkpoints with their settings
def test_training_checkpoints_with_their_settings_load(tmp_path, monkeypatch):
    """timm's and torchvision's training scripts save `args` (an argparse.Namespace), the authors' `config` (a
    yacs CfgNode): read as plain dicts, none of their code imported; anything else in them is still refused."""
    import argparse
    import types

    from swin_backbone import UnsafeFileError
    from swin_backbone.safe_load import PlainRecord, read_torch_checkpoint
    from test_safety import Exploit

    yacs, config_module = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__ = "yacs.config"
    config_module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config_module)
    config = CfgNode(MODEL=CfgNode(TYPE="swin", NAME="swin_tiny"))
    config.__dict__["__immutable__"] = True
    source = SwinClassifier(**TINY, num_classes=3)
    path = str(tmp_path / "checkpoint-12.pth")
    save_torch_zip({"epoch": 12, "arch": "swin_tiny_patch4_window7_224", "state_dict": authors_state(source),
                    "args": argparse.Namespace(lr=5e-4, model="swin", drop_path=0.1), "config": config}, path)
    checkpoint = read_torch_checkpoint(path)
    assert isinstance(checkpoint["args"], PlainRecord) and checkpoint["args"]["lr"] == 5e-4
    assert checkpoint["config"]["MODEL"]["TYPE"] == "swin"
    assert load_pretrained(SwinClassifier(**TINY, num_classes=3), path, strict=True, verbose=False).clean
    marker = tmp_path / "ran"
    save_torch_zip({"state_dict": authors_state(source), "args": argparse.Namespace(hook=Exploit(marker))}, path)
    with pytest.raises(UnsafeFileError, match="refusing to load"):
        read_torch_checkpoint(path)
    assert not marker.exists()
