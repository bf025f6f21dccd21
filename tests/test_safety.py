"""Safe by default: no file we read runs code, malformed files cannot read outside their buffers, and bad
input ends in one line `error: ...` (exit 1; argparse's 2 for usage) instead of a traceback or a silent run."""
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import paddle
import pytest

from conftest import ROOT
from synthetic_data import write_ade20k, write_coco
from torch_format import CraftedTensor, save_torch_zip

sys.path.insert(0, os.path.join(ROOT, "tools"))
import checkpoint_io  # noqa: E402
import cls_train  # noqa: E402

from swin_backbone import (MalformedFileError, SwinInputError, SwinTransformer, UnsafeFileError,  # noqa: E402
                           load_pickle_file, load_pretrained)

TINY_BACKBONE = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
TINY_CLS = ["--embed-dim", "16", "--depths", "1,1,1,1", "--num-heads", "1,1,2,2"]


# The rule that refuses Exploit: a global outside the allow-list, named in the message.
REFUSED_GLOBAL = f"refusing to load {os.system.__module__}.system"  # posix.system on Linux


class Exploit:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_pdparams(folder, name="evil.pdparams"):
    """(a .pdparams whose pickle runs a command, the marker file that command would create)."""
    marker = folder / f"{name}.ran"
    path = folder / name
    path.write_bytes(pickle.dumps({"patch_embed.proj.weight": Exploit(marker)}, protocol=4))
    return str(path), marker


def run(script, *args, timeout=600):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    return proc


def assert_one_line_error(proc, *fragments, code=1):
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], err[-3000:])
    last = err.splitlines()[-1] if err else ""
    assert "Traceback" not in err, err[-3000:]
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


# ------------------------------------------------------------------------------- malicious pickles
def test_api_refuses_malicious_pdparams(tmp_path):
    path, marker = evil_pdparams(tmp_path)
    with pytest.raises(UnsafeFileError, match=f"evil\\.pdparams: {REFUSED_GLOBAL}"):
        load_pretrained(SwinTransformer(**TINY_BACKBONE), path)
    with pytest.raises(UnsafeFileError, match=f"evil\\.pdparams: {REFUSED_GLOBAL}"):
        load_pickle_file(path)
    assert not marker.exists()


def test_tools_refuse_malicious_pdparams(tmp_path):
    path, marker = evil_pdparams(tmp_path)
    proc = run("convert_weights.py", path, str(tmp_path / "out.pdparams"))
    assert_one_line_error(proc, "error:", "evil.pdparams", REFUSED_GLOBAL)
    assert not (tmp_path / "out.pdparams").exists()
    proc = run("export.py", "--task", "cls", "--model", "swin_tiny_patch2_window4_32", "--weights", path,
               "--output", str(tmp_path / "export"))
    assert_one_line_error(proc, "error:", REFUSED_GLOBAL)
    picture = tmp_path / "p.png"
    import cv2

    cv2.imwrite(str(picture), np.full((32, 32, 3), 120, np.uint8))
    proc = run("cls_train.py", "--predict", str(picture), "--weights", path, *TINY_CLS)
    assert_one_line_error(proc, "error:", REFUSED_GLOBAL)
    assert not marker.exists()


def test_resume_refuses_malicious_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "last"
    last.mkdir(parents=True)
    _, marker = evil_pdparams(last, "model.pdparams")
    evil_pdparams(last, "optimizer.pdopt")
    (last / "state.json").write_text(json.dumps({"epoch": 0, "best_top1": 0, "model": "swin_tiny_patch2_window4_32"}))
    proc = run("cls_train.py", "--synthetic", "--resume", str(run_dir), "--epochs", "2", *TINY_CLS)
    assert_one_line_error(proc, "error:", "model.pdparams", REFUSED_GLOBAL)
    assert not marker.exists() and not (last / "optimizer.pdopt.ran").exists()


# Each case calls a tool's main() as its command line does (run_tool: a user error ends as one line
# `error: ...`), in one process per framework; prints {case: that line, or "ran"}.
TOOL_CASES = r"""
import json, sys
sys.path.insert(0, {tools!r})
from swin_backbone.runtime import run_tool
results = {{}}
for case, (tool, argv) in {cases!r}.items():
    module = __import__(tool)
    try:
        run_tool(lambda: module.main(argv))
        results[case] = "ran"
    except SystemExit as stop:
        results[case] = str(stop.code)
    except Exception as error:  # a traceback for the user: reported as such
        results[case] = f"uncaught {{type(error).__name__}}: {{error}}"
print("RESULT", json.dumps(results))
"""

URL = "https://example.com/weights/model.pdparams"
NOT_DOWNLOADED = "(nothing is downloaded)"  # the URL rule, for a file or a model folder alike


def run_tool_cases(cases: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", TOOL_CASES.format(tools=os.path.join(ROOT, "tools"), cases=cases)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][len("RESULT "):])


def evil_files(folder) -> tuple:
    """(a .pdparams/.pdopt pair sharing one prefix, an authors'-style .pth, the marker any of them would create)."""
    prefix, marker = folder / "evil", folder / "ran"
    for suffix in (".pdparams", ".pdopt"):
        (folder / f"evil{suffix}").write_bytes(pickle.dumps({"w": Exploit(marker)}, protocol=4))
    pth = folder / "evil.pth"
    save_torch_zip(None, str(pth), extra_pickle=pickle.dumps({"model": Exploit(marker)}, protocol=2))
    return str(prefix), str(pth), marker


def assert_refused(results: dict, expected: dict) -> None:
    assert set(results) == set(expected)
    for case, fragments in expected.items():
        line = results[case]
        assert line.startswith("error: ") and "\n" not in line, (case, line)
        for fragment in fragments:
            assert fragment in line, (case, fragment, line)


@pytest.mark.plugins
def test_paddledetection_loaders_get_only_checked_files(tmp_path):
    """Detector weights (det_eval, det_infer, export), --resume, pretrain_weights (.pdparams or .pth) and the
    backbone's `pretrained` are read by our reader before PaddleDetection's loader (plain pickle) sees them;
    URLs are refused, nothing is downloaded."""
    evil, evil_pth, marker = evil_files(tmp_path)
    coco = write_coco(str(tmp_path / "coco"), splits=(("train", 2), ("val", 1)))
    config = os.path.join(ROOT, "det_configs", "mask_rcnn_swin_smoke.yml")
    data = [f"TrainDataset.dataset_dir={coco}", f"EvalDataset.dataset_dir={coco}", f"TestDataset.dataset_dir={coco}",
            f"save_dir={tmp_path / 'out'}"]
    picture = os.path.join(coco, "val", "val_000.jpg")
    cases = {  # in this order: PaddleDetection keeps -o settings in one global config
        "det_eval weights": ("det_eval", ["-c", config, "-o", *data, f"weights={evil}.pdparams"]),
        "det_infer weights": ("det_infer", ["-c", config, "--image", picture, "-o", *data, f"weights={evil}"]),
        "export weights": ("export", ["--task", "det", "--config", config, "--weights", f"{evil}.pdparams",
                                      "--output", str(tmp_path / "export")]),
        "det_train --resume": ("det_train", ["-c", config, "--resume", evil, "-o", *data]),
        "pretrain_weights .pdparams": ("det_train", ["-c", config, "-o", *data, f"pretrain_weights={evil}.pdparams"]),
        "pretrain_weights .pth": ("det_train", ["-c", config, "-o", *data, f"pretrain_weights={evil_pth}"]),
        "det_eval weights URL": ("det_eval", ["-c", config, "-o", *data, f"weights={URL}"]),
        "det_train --resume URL": ("det_train", ["-c", config, "--resume", URL[:-len(".pdparams")], "-o", *data]),
        "pretrain_weights URL": ("det_train", ["-c", config, "-o", *data, f"pretrain_weights={URL}"]),
        "backbone pretrained URL": ("det_train", ["-c", config, "-o", *data, "pretrain_weights=",
                                                  f"SwinBackbone.pretrained={URL[:-len('.pdparams')]}.pth"]),
    }
    expected = {case: ["evil", REFUSED_GLOBAL] for case in cases if "URL" not in case}
    expected.update({case: ["https://example.com/weights/model.p", NOT_DOWNLOADED] for case in cases if "URL" in case})
    assert_refused(run_tool_cases(cases), expected)
    assert not marker.exists()


@pytest.mark.plugins
def test_paddleseg_loaders_get_only_checked_files(tmp_path):
    """--model_path (seg_eval, seg_predict), --resume_model, export's --weights, the model's and the backbone's
    `pretrained` are read by our reader before PaddleSeg's loader (plain pickle) sees them; URLs are refused."""
    evil, evil_pth, marker = evil_files(tmp_path)
    resume = tmp_path / "iter_4"
    resume.mkdir()
    for name in ("model.pdparams", "model.pdopt"):
        shutil.copy(f"{evil}.pdparams", resume / name)
    ade = os.path.join(write_ade20k(str(tmp_path / "ade"), splits=(("training", 2), ("validation", 1))),
                       "ADEChallengeData2016")
    config = ["--config", os.path.join(ROOT, "seg_configs", "upernet_swin_smoke.yml")]
    data = [f"train_dataset.dataset_root={ade}", f"val_dataset.dataset_root={ade}"]
    pictures = os.path.join(ade, "images", "validation")
    train = ["--iters", "1", "--save_dir", str(tmp_path / "out")]
    cases = {
        "seg_eval --model_path": ("seg_eval", [*config, "--model_path", f"{evil}.pdparams", "--opts", *data]),
        "seg_predict --model_path": ("seg_predict", [*config, "--model_path", f"{evil}.pdparams", "--image_path",
                                                     pictures, "--save_dir", str(tmp_path / "p"), "--opts", *data]),
        "seg_train --resume_model": ("seg_train", [*config, *train, "--resume_model", str(resume), "--opts", *data]),
        "export --weights": ("export", ["--task", "seg", *config, "--weights", f"{evil}.pdparams", "--output",
                                        str(tmp_path / "export")]),
        "model pretrained": ("seg_train", [*config, *train, "--opts", *data, f"model.pretrained={evil}.pdparams"]),
        "backbone pretrained .pdparams": ("seg_train", [*config, *train, "--opts", *data,
                                                        f"model.backbone.pretrained={evil}.pdparams"]),
        "backbone pretrained .pth": ("seg_train", [*config, *train, "--opts", *data,
                                                   f"model.backbone.pretrained={evil_pth}"]),
        "seg_eval --model_path URL": ("seg_eval", [*config, "--model_path", URL, "--opts", *data]),
        "seg_predict --model_path URL": ("seg_predict", [*config, "--model_path", URL, "--image_path", pictures,
                                                         "--opts", *data]),
        "model pretrained URL": ("seg_train", [*config, *train, "--opts", *data, f"model.pretrained={URL}"]),
        "backbone pretrained URL": ("seg_train", [*config, *train, "--opts", *data,
                                                  f"model.backbone.pretrained={URL}"]),
        "seg_train --resume_model URL": ("seg_train", [*config, *train, "--resume_model", URL[:-len(".pdparams")],
                                                       "--opts", *data]),
    }
    expected = {case: ["evil", REFUSED_GLOBAL] for case in cases if "URL" not in case}
    expected["seg_train --resume_model"] = ["iter_4/model.pdparams", REFUSED_GLOBAL]
    expected.update({case: [URL, NOT_DOWNLOADED] for case in cases if "URL" in case})
    expected["seg_train --resume_model URL"] = ["--resume_model: no folder at https://example.com/weights/model"]
    assert_refused(run_tool_cases(cases), expected)
    assert not marker.exists()


def test_cifar_tarball_cannot_run_code(tmp_path):
    marker = tmp_path / "cifar.ran"
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name in cls_train.TRAIN_BATCHES + ["test_batch"]:
            blob = pickle.dumps({b"data": Exploit(marker), b"labels": [0]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    with pytest.raises(UnsafeFileError, match=f"data_batch_1: {REFUSED_GLOBAL}"):
        cls_train.load_cifar10(str(path))
    proc = run("cls_train.py", "--data", str(path), "--epochs", "1", *TINY_CLS)
    assert_one_line_error(proc, "error:", REFUSED_GLOBAL)
    assert not marker.exists()


# ----------------------------------------------------------------------------- out-of-bounds .pth
SHARED = np.arange(16, dtype=np.float32)  # one 64-byte storage that several tensors view


def one(**view) -> dict:
    return {"layers.0.blocks.0.norm1.weight": CraftedTensor(**view)}


def views_of_shared(count: int) -> dict:
    return {f"layers.0.blocks.{i}.norm1.weight": CraftedTensor(SHARED, 0, (16,), (1,)) for i in range(count)}


# case: (tensors, the rule that must refuse it: a fragment of its message)
CRAFTED = {
    "huge stride": (one(storage=np.zeros(4, np.float32), offset=0, size=(4, 4), stride=(2 ** 28, 1)),
                    "reaches beyond its storage of 4 elements"),
    "offset past the end": (one(storage=np.zeros(96, np.float32), offset=10 ** 9, size=(96,), stride=(1,)),
                            "at offset 1000000000 reaches beyond its storage of 96 elements"),
    "more elements than the storage": (one(storage=np.zeros(4, np.float32), offset=0, size=(100_000,), stride=(1,)),
                                       "reaches beyond its storage of 4 elements"),
    # stride 0 stays inside the storage; the element count is what is refused (else 37 GiB from 16 bytes)
    "37 GiB from 16 bytes": (one(storage=np.zeros(4, np.float32), offset=0, size=(100_000, 100_000), stride=(0, 0)),
                             "reaches beyond its storage of 4 elements"),
    "a broadcast view larger than its storage": (one(storage=SHARED, offset=0, size=(20,), stride=(0,)),
                                                 "reaches beyond its storage of 16 elements"),
    "storage shorter than declared": (one(storage=np.zeros(4, np.float32), offset=0, size=(4,), stride=(1,),
                                          declared_numel=10 ** 6),
                                      "declares 1000000 elements of 4 bytes but holds 16 bytes"),
    "negative stride": (one(storage=np.zeros(4, np.float32), offset=3, size=(4,), stride=(-1,)),
                        "invalid tensor layout offset=3 size=(4,) stride=(-1,)"),
    # each view lies inside the storage; five of them declare 5x the file's 64 bytes of data
    "five views of one storage": (views_of_shared(5), "its tensors declare more than 4x the data the file holds"),
}

READ = """
import json, sys
sys.path.insert(0, {root!r})
import swin_backbone
from swin_backbone import MalformedFileError, read_torch_checkpoint
results = {{}}
for case, path in {paths!r}.items():
    try:
        state = read_torch_checkpoint(path)["model"]
        results[case] = ["loaded", {{k: v.tolist() for k, v in state.items()}}]
    except MalformedFileError as error:
        results[case] = ["refused", str(error)]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def crafted_results(tmp_path_factory):
    """What the reader does with each crafted file, read in a subprocess: a segfault or a heap read would not
    be caught by pytest otherwise."""
    folder = tmp_path_factory.mktemp("crafted")
    paths = {}
    for case, tensors in [(case, tensors) for case, (tensors, _) in CRAFTED.items()] + [("four views", views_of_shared(4))]:
        paths[case] = str(folder / f"crafted {case}.pth")
        save_torch_zip({"model": tensors}, paths[case])
    proc = subprocess.run([sys.executable, "-c", READ.format(root=ROOT, paths=paths)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_pth_views_are_bounds_checked(crafted_results, case):
    """Each crafted file is refused by the rule aimed at it, in one sentence naming the file."""
    outcome, message = crafted_results[case]
    assert outcome == "refused", (case, message)
    assert f"crafted {case}.pth" in message and CRAFTED[case][1] in message, (case, message)


def test_views_may_share_storage_up_to_four_times_its_data(crafted_results):
    """Tied weights are views of one storage: four full views of 64 bytes (exactly the 4x budget) load."""
    outcome, state = crafted_results["four views"]
    assert outcome == "loaded", state
    assert len(state) == 4 and all(values == SHARED.tolist() for values in state.values())


def test_convert_tool_writes_nothing_from_a_crafted_pth(tmp_path):
    path = str(tmp_path / "crafted.pth")
    save_torch_zip({"model": {"patch_embed.proj.weight": CraftedTensor(
        np.zeros(4, np.float32), 10 ** 9, (96,), (1,))}}, path)
    proc = run("convert_weights.py", path, str(tmp_path / "out.pdparams"))
    assert_one_line_error(proc, "error:", "beyond its storage")
    assert not (tmp_path / "out.pdparams").exists()


# ----------------------------------------------------------------------------- genuine files still load
def test_genuine_files_still_load(tmp_path):
    model = SwinTransformer(**TINY_BACKBONE)
    paddle.save(model.state_dict(), str(tmp_path / "m.pdparams"))
    state = load_pickle_file(str(tmp_path / "m.pdparams"))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(state[name], value.numpy())
    optimizer = paddle.optimizer.AdamW(learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10),
                                       parameters=model.parameters())
    model(paddle.rand([1, 3, 32, 32]))[0].mean().backward()
    optimizer.step()
    paddle.save(optimizer.state_dict(), str(tmp_path / "o.pdopt"))
    opt_state = load_pickle_file(str(tmp_path / "o.pdopt"))
    assert opt_state["LR_Scheduler"]["last_epoch"] == 0
    assert set(opt_state) == set(paddle.load(str(tmp_path / "o.pdopt")))
    fresh = paddle.optimizer.AdamW(learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10),
                                   parameters=model.parameters())
    fresh.set_state_dict(opt_state)
    pth = str(tmp_path / "m.pth")
    from test_convert import authors_layout

    save_torch_zip({"model": authors_layout(model)}, pth)
    again = SwinTransformer(**TINY_BACKBONE)
    assert load_pretrained(again, pth, strict=True, verbose=False).clean
    np.testing.assert_array_equal(again.layers[0].blocks[0].attn.qkv.weight.numpy(),
                                  model.layers[0].blocks[0].attn.qkv.weight.numpy())


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pdparams"
    path.write_bytes(pickle.dumps({"w": np.array([1, "x"], dtype=object)}))
    with pytest.raises(UnsafeFileError, match="dtype object"):
        load_pickle_file(str(path))


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, fragment", [
    (["--batch-size", "-4"], "argument --batch-size"), (["--batch-size", "0"], "argument --batch-size"),
    (["--epochs", "0"], "argument --epochs"), (["--epochs", "-1"], "argument --epochs"),
    (["--lr", "0"], "argument --lr"), (["--depths", "2,x"], "argument --depths"),
])
def test_cls_train_rejects_nonsense_numbers(args, fragment, capsys):
    with pytest.raises(SystemExit) as stop:
        cls_train.parse_args(["--synthetic", *args])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert fragment in last and args[1] in last, last  # names the argument and the value it refuses


def test_usage_errors_exit_2_with_one_line(tmp_path):
    proc = run("cls_train.py", "--synthetic", "--batch-size", "-4")
    assert_one_line_error(proc, "argument --batch-size", code=2)
    proc = run("infer.py", "--model-dir", str(tmp_path), "--size", "0x0")
    assert_one_line_error(proc, "argument --size", code=2)
    proc = run("infer.py", "--model-dir", str(tmp_path), "--batch", "0")
    assert_one_line_error(proc, "argument --batch", code=2)


def test_conversion_that_matches_nothing_fails(tmp_path):
    resnet = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.weight": np.zeros((1000, 2048), np.float32)}
    path = str(tmp_path / "resnet50.pth")
    save_torch_zip({"state_dict": resnet}, path)
    proc = run("convert_weights.py", path, str(tmp_path / "out.pdparams"))
    assert_one_line_error(proc, "error:", "none of its 2 tensors matches")
    assert not (tmp_path / "out.pdparams").exists()


def test_broken_files_get_one_line(tmp_path):
    garbage = tmp_path / "cifar-10-python.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + os.urandom(300))
    assert_one_line_error(run("cls_train.py", "--data", str(garbage), *TINY_CLS), "error:", "truncated or corrupt")
    good = tmp_path / "good.tar.gz"
    cls_train.write_cifar10_tarball(str(good), cls_train.synthetic_cifar10(2, 1))
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_one_line_error(run("cls_train.py", "--data", str(truncated), *TINY_CLS), "error:", "truncated.tar.gz")
    bad_labels = tmp_path / "labels.tar.gz"
    data = cls_train.synthetic_cifar10(2, 1)
    data["train"][1][3] = 12
    cls_train.write_cifar10_tarball(str(bad_labels), data)
    assert_one_line_error(run("cls_train.py", "--data", str(bad_labels), *TINY_CLS), "error:", "labels", "0..9")
    not_a_picture = tmp_path / "cat.png"
    not_a_picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    proc = run("cls_train.py", "--predict", str(not_a_picture), "--weights", str(tmp_path / "none.pdparams"))
    assert_one_line_error(proc, "error:", "not a readable picture")


def test_broken_resume_files_get_one_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = run("cls_train.py", "--synthetic", "--epochs", "1", "--output", str(run_dir), "--batch-size", "100",
               *TINY_CLS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_file = run_dir / "last" / "model.pdparams"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    proc = run("cls_train.py", "--synthetic", "--epochs", "2", "--resume", str(run_dir), *TINY_CLS)
    assert_one_line_error(proc, "error:", "model.pdparams", "truncated or corrupt")
    (run_dir / "last" / "state.json").write_text("{not json")
    proc = run("cls_train.py", "--synthetic", "--epochs", "2", "--resume", str(run_dir), *TINY_CLS)
    assert_one_line_error(proc, "error:", "incomplete checkpoint")


def test_debug_shows_the_traceback(tmp_path):
    """--debug or SWIN_PADDLE_DEBUG=1 shows the traceback; without them (or with SWIN_PADDLE_DEBUG=0) one line."""
    args = [os.path.join(ROOT, "tools", "convert_weights.py"), str(tmp_path / "missing.pth"), str(tmp_path / "o.pdparams")]
    env = {k: v for k, v in os.environ.items() if k != "SWIN_PADDLE_DEBUG"}
    for extra, debug, traceback in (([], None, False), (["--debug"], None, True), ([], "1", True), ([], "0", False)):
        proc = subprocess.run([sys.executable, *args, *extra], capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env=dict(env, SWIN_PADDLE_DEBUG=debug) if debug else env)
        assert proc.returncode == 1 and "missing.pth" in proc.stderr.strip().splitlines()[-1], (extra, debug)
        assert ("Traceback" in proc.stderr) is traceback, (extra, debug, proc.stderr[-2000:])


def test_backbone_input_rank_and_channels_are_explained():
    model = SwinTransformer(**TINY_BACKBONE)
    with pytest.raises(SwinInputError, match=r"expects images \[B, 3, H, W\], got a tensor of shape \[64, 64\]"):
        model(paddle.rand([64, 64]))
    with pytest.raises(SwinInputError, match=r"shape \[1, 1, 64, 64\]"):
        model(paddle.rand([1, 1, 64, 64]))


# -------------------------------------------------------------------------------- infer.py folder rule
def test_infer_runs_exactly_the_folder_given(tmp_path):
    original = tmp_path / "original"
    proc = run("export.py", "--task", "cls", "--model", "swin_tiny_patch2_window4_32", "--num-classes", "10",
               "--output", str(original))
    assert proc.returncode == 0, proc.stderr[-3000:]
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    for name in os.listdir(original):
        if name.startswith("model."):
            os.remove(original / name)
    proc = run("infer.py", "--model-dir", str(copy), "--size", "32x32", "--repeats", "1")
    assert proc.returncode == 0 and "[[1, 10]]" in proc.stdout, proc.stderr[-3000:]
    proc = run("infer.py", "--model-dir", str(original), "--size", "32x32", "--repeats", "1")
    assert_one_line_error(proc, "error:", str(original))


# --------------------------------------------------------------------------------- atomic checkpoints
def checkpoint(epoch):
    return {"w": np.full(3, epoch, np.float32)}, {"m": np.full(2, epoch, np.float32)}, {"epoch": epoch}


class Killed(BaseException):
    pass


# The file-system steps of checkpoint_io.save over an existing checkpoint: model and optimizer files, state.json
# (the new one is complete from here), the old one moved aside, the new one moved in, the old one deleted.
SAVE_STEPS = ("paddle.save", "paddle.save", "json.dump", "os.replace", "os.replace", "shutil.rmtree")


def patch_save_steps(monkeypatch, on_step) -> None:
    """Route checkpoint_io's file-system steps through on_step(name, function, args, kwargs)."""
    for module, name in ((checkpoint_io.paddle, "save"), (checkpoint_io.json, "dump"), (checkpoint_io.os, "replace"),
                         (checkpoint_io.shutil, "rmtree")):
        function = getattr(module, name)
        label = f"{module.__name__}.{name}" if module is not checkpoint_io.os else f"os.{name}"
        monkeypatch.setattr(module, name, lambda *a, _f=function, _l=label, **k: on_step(_l, _f, a, k))


def test_checkpoint_save_steps_are_the_ones_killed(tmp_path, monkeypatch):
    """Every step of a save is a kill point below: a new step must be added there."""
    folder = str(tmp_path / "last")
    checkpoint_io.save(folder, *checkpoint(1))
    seen = []
    patch_save_steps(monkeypatch, lambda label, function, args, kwargs: seen.append(label) or function(*args, **kwargs))
    checkpoint_io.save(folder, *checkpoint(2))
    assert tuple(seen) == SAVE_STEPS


@pytest.mark.parametrize("kill_at", range(1, len(SAVE_STEPS) + 1))
def test_checkpoint_killed_at_any_step_still_resumes(tmp_path, monkeypatch, kill_at):
    """Kill the write of epoch 2 over epoch 1 at its k-th file-system step (a file being written is left half
    written): the newest complete checkpoint is found, epoch 2 once its state.json is written, else epoch 1."""
    folder = str(tmp_path / "last")
    checkpoint_io.save(folder, *checkpoint(1))
    calls = {"n": 0}

    def step(label, function, args, kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            if label == "paddle.save":  # die half-way through writing the file
                with open(args[1], "wb") as handle:
                    handle.write(b"\x80\x04partial")
            elif label == "json.dump":
                args[1].write('{"epo')
            raise Killed()
        return function(*args, **kwargs)

    patch_save_steps(monkeypatch, step)
    with pytest.raises(Killed):
        checkpoint_io.save(folder, *checkpoint(2))
    monkeypatch.undo()
    model_state, optimizer_state, state = checkpoint_io.load(folder)
    assert state["epoch"] == (2 if kill_at > SAVE_STEPS.index("json.dump") + 1 else 1), SAVE_STEPS[kill_at - 1]
    assert float(model_state["w"][0]) == float(optimizer_state["m"][0]) == state["epoch"]
    assert sorted(os.listdir(tmp_path)) == ["last"]
    checkpoint_io.save(folder, *checkpoint(3))  # and the next save works
    assert checkpoint_io.load(folder)[2]["epoch"] == 3


def test_missing_checkpoint_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint_io.load(str(tmp_path / "last"))
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / "state.json").write_text("{}")
    with pytest.raises(MalformedFileError, match="incomplete checkpoint"):
        checkpoint_io.load(str(tmp_path / "last"))
