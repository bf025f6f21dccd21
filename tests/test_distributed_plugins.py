"""det_train.py and seg_train.py on several processes (two launchers on this machine play two machines): losses
finite and falling, BatchNorm synchronised on CPU, checkpoints from rank 0 only, the evaluation during training
equal to a one-process evaluation of the same weights; seeded runs repeat bit for bit; a bad start is one line."""
import json
import math
import os
import re

import numpy as np
import paddle
import pytest

from conftest import ROOT
from launching import TOOLS, launch, launch_machines, run_tool
from synthetic_data import write_ade20k, write_coco

pytestmark = pytest.mark.plugins  # PaddleDetection / PaddleSeg: Paddle 2.6 only

# Each detection smoke config trains on 2 processes, with the BatchNorm layers its config synchronises (Cascade's
# box heads: norm_type sync_bn, 4 convs x 3 stages).
DET_SMOKE_CONFIGS = {"mask_rcnn_swin_smoke.yml": 0, "cascade_mask_rcnn_swin_smoke.yml": 12}
SEG_SMOKE = os.path.join(ROOT, "seg_configs", "upernet_swin_smoke.yml")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(str(tmp_path_factory.mktemp("coco") / "smoke_coco"))


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    return os.path.join(write_ade20k(str(tmp_path_factory.mktemp("ade"))), "ADEChallengeData2016")


def det_options(config: str, coco: str, save_dir: str, *extra: str):
    return ["-c", os.path.join(ROOT, "det_configs", config), "-o", f"TrainDataset.dataset_dir={coco}",
            f"EvalDataset.dataset_dir={coco}", f"TestDataset.dataset_dir={coco}", f"save_dir={save_dir}", *extra]


def seg_options(root: str, save_dir: str, *extra: str):
    return ["--config", SEG_SMOKE, "--save_dir", save_dir, *extra, "--opts", f"train_dataset.dataset_root={root}",
            f"val_dataset.dataset_root={root}"]


def falling(values, fraction):
    assert values and all(math.isfinite(v) for v in values), values
    return np.mean(values[-4:]) < fraction * np.mean(values[:4])


def ap_lines(text: str):
    return re.findall(r"Average (?:Precision|Recall) +\((?:AP|AR)\) @\[.*\] = -?[0-9.]+", text)


def seg_metrics(text: str):
    """PaddleSeg's evaluation lines: mIoU, accuracy, kappa, dice, then per-class IoU, precision, recall."""
    return re.findall(r"\[EVAL\] (#Images.*|Class \w+: \s*\[[^\]]*\])", text)


def files_under(folder: str) -> list:
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]


def weights(path: str) -> dict:
    return {k: v.numpy() for k, v in paddle.load(path).items()}


SYNC_CHECK = r"""
import json, sys
sys.path.insert(0, {tools!r})
import numpy as np, paddle, paddle.distributed as dist
import sync_batch_norm
dist.init_parallel_env()
rank = dist.get_rank()
rng = np.random.default_rng(0)
x_all = rng.normal(2.0, 3.0, (4, 3, 5, 6)).astype("float32")
w_all = rng.normal(size=x_all.shape).astype("float32")
part = slice(2 * rank, 2 * rank + 2)

def step(layer, x, w):
    x = paddle.to_tensor(x, stop_gradient=False)
    y = layer(x)
    (y * paddle.to_tensor(w)).sum().backward()
    return [y.numpy(), x.grad.numpy(), layer.weight.grad, layer.bias.grad, layer._mean.numpy(), layer._variance.numpy()]

def summed(t):  # parameter gradients add up over processes (DataParallel then averages)
    dist.all_reduce(t)
    return t.numpy()

reference = step(paddle.nn.BatchNorm2D(3), x_all, w_all)
reference[2], reference[3] = reference[2].numpy(), reference[3].numpy()
result = {{}}
for name in ("synchronised", "plain"):
    layer = paddle.nn.BatchNorm2D(3)
    converted = sync_batch_norm.convert(layer) if name == "synchronised" else 0
    out = step(layer, x_all[part], w_all[part])
    out[2], out[3] = summed(out[2]), summed(out[3])
    ref = [reference[0][part], reference[1][part], *reference[2:]]
    result[name] = [converted] + [float(np.abs(a - b).max()) for a, b in zip(out, ref)]
print("RESULT", json.dumps(result))
"""


def test_cpu_sync_batch_norm_is_batch_norm_over_every_process(tmp_path):
    """Outputs, input and parameter gradients, running mean and variance on 2 processes x 2 images equal a
    BatchNorm2D over all 4 images; unsynchronised BatchNorm (what PaddleSeg falls back to on CPU) does not."""
    script = tmp_path / "sync_check.py"
    script.write_text(SYNC_CHECK.format(tools=TOOLS))
    run = launch(str(script), [], str(tmp_path / "logs"), timeout=300)
    assert run.returncode == 0, run.text()[-3000:]
    for rank in (0, 1):
        result = json.loads(re.search(r"RESULT (.*)", run.logs[rank]).group(1))
        assert result["synchronised"][0] == 1 and max(result["synchronised"][1:]) < 2e-5, result
        assert max(result["plain"][1:]) > 1e-2, result


@pytest.mark.parametrize("config", DET_SMOKE_CONFIGS)
def test_det_train_on_two_machines(config, coco, tmp_path):
    writer, other = str(tmp_path / "rank0"), str(tmp_path / "rank1")
    common = ["--eval", "--seed", "0"]
    machine = [[*common, *det_options(config, coco, out, "epoch=6", "snapshot_epoch=6", "use_vdl=true",
                                      f"vdl_log_dir={os.path.join(out, 'vdl')}")] for out in (writer, other)]
    runs = launch_machines("det_train.py", machine, str(tmp_path / "logs"), timeout=900)
    assert [run.returncode for run in runs] == [0, 0], runs[0].text()[-4000:] + runs[1].text()[-2000:]
    log = runs[0].output
    synchronised = DET_SMOKE_CONFIGS[config]
    assert (f"norm_type sync_bn: {synchronised} BatchNorm layers synchronised across 2 CPU processes" in log) == (
        synchronised > 0), log[:3000]
    losses = [float(v) for v in re.findall(r"\bloss: ([0-9.]+)", log)]
    assert len(losses) == 12 and falling(losses, 0.85), losses  # 8 images, 2 x 2 per step: 2 steps x 6 epochs
    name = os.path.splitext(config)[0]
    final = os.path.join(writer, name, "model_final.pdparams")
    assert os.path.isfile(final) and files_under(os.path.join(writer, "vdl"))
    assert not files_under(other)  # rank 0 alone writes: checkpoints, evaluation files, VisualDL
    during = ap_lines(log)
    assert len(during) == 24, log[-3000:]  # bbox and segm, once, at the end
    alone = run_tool("det_eval.py", *det_options(config, coco, str(tmp_path / "eval"), f"weights={final}"))
    assert alone.returncode == 0, (alone.stdout + alone.stderr)[-3000:]
    assert ap_lines(alone.stdout + alone.stderr) == during


def test_seg_train_on_two_machines(ade, tmp_path):
    writer, other = str(tmp_path / "rank0"), str(tmp_path / "rank1")
    common = ["--seed", "0", "--iters", "12", "--save_interval", "12", "--log_iters", "1", "--do_eval", "--use_vdl"]
    runs = launch_machines("seg_train.py", [seg_options(ade, writer, *common), seg_options(ade, other, *common)],
                           str(tmp_path / "logs"), timeout=900)
    assert [run.returncode for run in runs] == [0, 0], runs[0].text()[-4000:] + runs[1].text()[-2000:]
    log = runs[0].output
    assert "SyncBatchNorm: 13 BatchNorm layers synchronised across 2 CPU processes" in log
    losses = [float(v) for v in re.findall(r"\[TRAIN\].*?loss: ([0-9.]+)", log)]
    assert len(losses) == 12 and falling(losses, 0.8), losses
    model = os.path.join(writer, "iter_12", "model.pdparams")
    assert os.path.isfile(model) and os.path.isfile(os.path.join(writer, "best_model", "model.pdparams"))
    assert any("vdlrecords" in path for path in files_under(writer))
    assert not files_under(other)  # rank 0 alone writes (PaddleSeg makes the empty folder on every process)
    during = seg_metrics(log)  # 3 images over 2 processes: one padded
    assert len(during) == 4 and "#Images: 3 " in during[0], log[-3000:]
    alone = run_tool("seg_eval.py", "--config", SEG_SMOKE, "--model_path", model, "--opts",
                     f"val_dataset.dataset_root={ade}")
    assert alone.returncode == 0, (alone.stdout + alone.stderr)[-3000:]
    assert seg_metrics(alone.stdout + alone.stderr) == during


def test_seeded_runs_repeat_bit_for_bit(coco, ade, tmp_path):
    """Initialisation, data order, augmentation and sampling from --seed: the same weights, bit for bit."""
    det, seg = [], []
    for run in ("a", "b"):
        save_dir = str(tmp_path / f"det_{run}")
        proc = run_tool("det_train.py", "--seed", "5", "--threads", "1",
                        *det_options("mask_rcnn_swin_smoke.yml", coco, save_dir, "epoch=1"))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        det.append(weights(os.path.join(save_dir, "mask_rcnn_swin_smoke", "model_final.pdparams")))
        save_dir = str(tmp_path / f"seg_{run}")
        proc = run_tool("seg_train.py", "--seed", "5", "--threads", "1",
                        *seg_options(ade, save_dir, "--iters", "4", "--save_interval", "4"))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        seg.append(weights(os.path.join(save_dir, "iter_4", "model.pdparams")))
    for first, second in (det, seg):
        for name, value in first.items():
            np.testing.assert_array_equal(second[name], value, err_msg=name)


def test_a_machine_that_cannot_start_ends_the_run_with_one_line(coco, ade, tmp_path):
    """The second machine has no ADE20K, then another batch size; the first names it and what to fix."""
    save_dir = str(tmp_path / "out")
    runs = launch_machines("seg_train.py", [seg_options(ade, save_dir), seg_options(str(tmp_path / "none"), save_dir)],
                           str(tmp_path / "missing"), timeout=300)
    assert all(run.returncode != 0 for run in runs)
    assert re.search(r"error: rank 1 \(on .+\) could not start: ADE20K not found: .*none/images/training",
                     runs[0].output), runs[0].text()[-3000:]
    runs = launch_machines("det_train.py", [det_options("mask_rcnn_swin_smoke.yml", coco, save_dir),
                                            det_options("mask_rcnn_swin_smoke.yml", coco, save_dir, "epoch=3")],
                           str(tmp_path / "mismatch"), timeout=300)
    assert all(run.returncode != 0 for run in runs)
    assert re.search(r"error: rank 1 \(on .+\) has another option epoch than rank 0 .*: start every process with "
                     r"the same command, config and data", runs[0].output), runs[0].text()[-3000:]
    final = str(tmp_path / "model_final.pdparams")
    run = launch("det_eval.py", det_options("mask_rcnn_swin_smoke.yml", coco, save_dir, f"weights={final}"),
                 str(tmp_path / "eval"), timeout=300)
    assert run.returncode != 0 and "error: det_eval.py runs on one process" in run.output, run.text()[-3000:]
