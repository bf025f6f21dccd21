"""cls_train.py on several processes (Paddle's launcher, CPU processes on gloo: the code path of 8 GPUs):
2 processes x batch B train what 1 process x 2B trains, the same seed repeats a run bit for bit, every image
is used once per epoch, --resume continues on another number of processes, rank 0 alone writes, and a
process that cannot start ends the run with one line."""
import os
import re
import socket
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT
from launching import TOOLS, launch, launch_machines, run_tool

sys.path.insert(0, os.path.join(ROOT, "tools"))
import cls_batches  # noqa: E402
import cls_train  # noqa: E402

TINY = ["--embed-dim", "16", "--depths", "1,1,1,1", "--num-heads", "1,1,2,2", "--threads", "1", "--lr", "2e-3",
        "--warmup-epochs", "0.5", "--epochs", "2"]
SAME_AS_ONE = ["--drop-path", "0", "--randaugment", "4"]  # every random draw per image: process count-free
PER_PROCESS = 20


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    """An odd number of images (the last global batch splits unevenly) in the official format."""
    data = cls_train.synthetic_cifar10(train_per_class=30, test_per_class=10)
    data["train"] = tuple(array[:299] for array in data["train"])
    data["test"] = tuple(array[:99] for array in data["test"])
    path = str(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz")
    cls_train.write_cifar10_tarball(path, data)
    return path


def weights(output: str) -> dict:
    return {k: v.numpy() for k, v in paddle.load(os.path.join(output, "last", "model.pdparams")).items()}


def epoch_lines(log: str):
    return re.findall(r"epoch (\d+)/\d+  train loss ([0-9.]+)  test top-1 ([0-9.]+)%", log)


@pytest.fixture(scope="module")
def one_process(tarball, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("one"))
    proc = run_tool("cls_train.py", "--data", tarball, "--output", output, "--batch-size", str(2 * PER_PROCESS),
                    *TINY, *SAME_AS_ONE)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return output


@pytest.fixture(scope="module")
def two_processes(tarball, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("two"))
    run = launch("cls_train.py", ["--data", tarball, "--output", output, "--batch-size", str(PER_PROCESS), *TINY,
                                  *SAME_AS_ONE], str(tmp_path_factory.mktemp("two_logs")))
    assert run.returncode == 0, run.text()[-4000:]
    return output, run


def test_two_processes_train_what_one_process_trains(one_process, two_processes):
    output, run = two_processes
    assert "2 process(es) x --batch-size 20 = 40 images per step" in run.output
    one, two = (epoch_lines(open(os.path.join(o, "log.txt")).read()) for o in (one_process, output))
    assert len(one) == len(two) == 2, (one, two)  # rank 0 alone writes the log: no line twice
    for (epoch_a, loss_a, top1_a), (epoch_b, loss_b, top1_b) in zip(one, two):
        assert epoch_a == epoch_b and abs(float(loss_a) - float(loss_b)) < 1e-5 and top1_a == top1_b
    first, second = weights(one_process), weights(output)
    for name, value in first.items():
        np.testing.assert_allclose(second[name], value, rtol=0, atol=2e-5, err_msg=name)


def test_same_seed_same_weights_bit_for_bit(tarball, tmp_path):
    """Initialisation, data order, augmentation, mixup, drop path: all from --seed, so a repeated command
    repeats the run exactly (same thread count)."""
    runs = []
    for name in ("a", "b"):
        output = str(tmp_path / name)
        proc = run_tool("cls_train.py", "--data", tarball, "--output", output, "--batch-size", "50", *TINY,
                        "--epochs", "1", "--mixup", "0.8", "--randaugment", "3", "--seed", "7")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        runs.append(weights(output))
    for name, value in runs[0].items():
        np.testing.assert_array_equal(runs[1][name], value, err_msg=name)


def test_resume_on_another_number_of_processes(tarball, one_process, tmp_path):
    """Stopped after an epoch on 2 processes x 20, continued on 1 process x 40: the weights of the
    uninterrupted 1 x 40 run."""
    output = str(tmp_path / "run")
    run = launch("cls_train.py", ["--data", tarball, "--output", output, "--batch-size", str(PER_PROCESS), *TINY,
                                  *SAME_AS_ONE, "--stop-after", "1"], str(tmp_path / "logs"))
    assert run.returncode == 0, run.text()[-4000:]
    with pytest.raises(cls_train.SwinInputError, match="that run took 40 images per step .* pass --batch-size 40"):
        cls_train.main(["--data", tarball, "--resume", output, "--batch-size", "20", *TINY, *SAME_AS_ONE])
    proc = run_tool("cls_train.py", "--data", tarball, "--resume", output, "--batch-size", str(2 * PER_PROCESS),
                    *TINY, *SAME_AS_ONE)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    expected, resumed = weights(one_process), weights(output)
    for name, value in expected.items():
        np.testing.assert_allclose(resumed[name], value, rtol=0, atol=2e-5, err_msg=name)


def test_evaluation_on_two_processes_counts_every_image_once(tarball, one_process, tmp_path):
    """99 test images over 2 processes (uneven shards): the same confusion table as one process."""
    model = os.path.join(one_process, "last", "model.pdparams")
    args = ["--data", tarball, "--eval-only", "--weights", model, "--batch-size", "8", *TINY]
    run = launch("cls_train.py", args, str(tmp_path / "logs"))
    assert run.returncode == 0, run.text()[-4000:]
    alone = run_tool("cls_train.py", *args)
    table = lambda text: re.findall(r"^(\w+) +(\d+) +([0-9.]+)%$", text, re.M)  # noqa: E731
    assert table(run.output) == table(alone.stdout) and len(table(alone.stdout)) == 10
    total = re.search(r"test top-1: ([0-9.]+)%  \((\d+) images, 2 process", run.output)
    assert total and total.group(2) == "99" and f"test top-1: {total.group(1)}%" in alone.stdout


def test_shards_are_disjoint_cover_the_epoch_and_do_not_depend_on_the_process_count():
    count, per_process, seed, epoch = 23, 4, 3, 1
    alone = list(cls_batches.train_parts(count, 2 * per_process, seed, epoch))
    ranks = [list(cls_batches.train_parts(count, per_process, seed, epoch, rank, 2)) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(alone) == 3  # every process runs every step
    used = []
    for step, whole in enumerate(alone):
        parts = [ranks[rank][step] for rank in range(2)]
        assert len(parts[0].index) == len(parts[1].index)  # pads make the parts equal
        real = np.concatenate([part.index[:part.real] for part in parts])
        np.testing.assert_array_equal(real, whole.index[:whole.real])  # the same images make the step
        assert all(part.batch == whole.real for part in parts)
        used.extend(real)
    assert sorted(used) == list(range(count))  # once each per epoch, none dropped
    assert sum(part.weights().sum() for rank in ranks for part in rank) == count
    # the last step holds 23 - 16 = 7 images: 4 on rank 0, 3 + one zero-weighted pad on rank 1
    assert (ranks[0][-1].real, ranks[1][-1].real, len(ranks[1][-1].index)) == (4, 3, 4)
    images = cls_train.synthetic_cifar10(train_per_class=3, test_per_class=1)["train"][0][:count]
    order = cls_batches.epoch_order(count, seed, epoch)
    np.testing.assert_array_equal(  # an image's augmentation does not depend on its batch or process
        cls_batches.augment(images[order], order, seed, epoch, randaugment=5)[np.argsort(order)],
        cls_batches.augment(images, np.arange(count), seed, epoch, randaugment=5))


def test_a_machine_that_cannot_start_ends_the_run_with_one_line(tarball, tmp_path):
    """Two machines (launchers on this one): the second lacks the data, then has another --lr. Every process
    stops before the first step, rank 0's console names the machine and what to fix."""
    common = ["--output", str(tmp_path / "out"), "--batch-size", "50", *TINY]
    missing = str(tmp_path / "elsewhere" / "cifar-10-python.tar.gz")
    runs = launch_machines("cls_train.py", [["--data", tarball, *common], ["--data", missing, *common]],
                           str(tmp_path / "missing"), timeout=300)
    assert all(run.returncode != 0 for run in runs), [run.returncode for run in runs]
    line = [l for l in runs[0].output.splitlines() if l.startswith("error:")]
    assert line and re.search(r"rank 1 \(on .+\) could not start: CIFAR-10 not found at .*elsewhere", line[-1]), \
        runs[0].text()[-3000:]
    assert "error: CIFAR-10 not found" in runs[1].text()

    runs = launch_machines("cls_train.py", [["--data", tarball, *common], ["--data", tarball, *common, "--lr", "1"]],
                           str(tmp_path / "lr"), timeout=300)
    assert all(run.returncode != 0 for run in runs)
    assert re.search(r"error: rank 1 \(on .+\) has another --lr than rank 0 .*: start every process with the same "
                     r"command", runs[0].output), runs[0].text()[-3000:]
    assert not os.path.exists(os.path.join(str(tmp_path / "out"), "last"))


def test_a_master_port_in_use_is_one_line():
    """Paddle's launcher would wait for its peers without end; tools/launch.py says what to fix."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run([sys.executable, os.path.join(TOOLS, "launch.py"), "--master", f"127.0.0.1:{port}",
                               "--nnodes", "2", "--rank", "0", "--nproc_per_node", "1",
                               os.path.join(TOOLS, "cls_train.py"), "--synthetic"], capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"error: port {port} on 127.0.0.1 (--master) is in use by another program or run: choose a free port and "
        "pass the same --master to every machine"), proc.stderr


def test_framework_checkpoint_files_are_written_whole(tmp_path):
    """det_train/seg_train make paddle.save atomic per file: a save that fails half-way leaves the old file."""
    import checkpoint_io

    save = checkpoint_io.atomic_paddle_save(paddle.save)
    path = str(tmp_path / "iter_1" / "model.pdparams")
    save({"w": paddle.ones([2])}, path)
    with pytest.raises(Exception):
        save({"w": paddle.zeros([2]), "not a tensor": lambda: 0}, path)
    np.testing.assert_array_equal(paddle.load(path)["w"].numpy(), [1, 1])
    assert os.listdir(tmp_path / "iter_1") == ["model.pdparams"]


def test_each_process_draws_its_own_augmentation_and_dropout():
    """det_train/seg_train: after the shared initialisation seed, Python's and NumPy's generators (the
    frameworks' augmentation) and Paddle's (dropout, sampling) are seeded from (seed, rank): each rank its own
    draws, the same ones on every run."""
    import random

    import distributed

    def draws(rank):
        distributed.seed_data_streams(3, rank)
        distributed.seed_model_stream(3, rank)
        return random.random(), float(np.random.random()), float(paddle.rand([1]).numpy()[0])

    first, other, again = draws(0), draws(1), draws(0)
    assert first == again and all(a != b for a, b in zip(first, other))
