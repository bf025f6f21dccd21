"""tools/cls_train.py end to end on a synthetic CIFAR-10 tarball in the official format."""
import os
import re
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import cls_train  # noqa: E402

from swin_backbone import create_classifier  # noqa: E402
from swin_backbone.runtime import available_cores  # noqa: E402

TINY = ["--embed-dim", "16", "--depths", "1,1,1,1", "--num-heads", "1,1,2,2", "--batch-size", "50",
        "--lr", "2e-3", "--warmup-epochs", "0.5", "--threads", "2"]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz"
    cls_train.write_cifar10_tarball(str(path), cls_train.synthetic_cifar10(train_per_class=40, test_per_class=10))
    return str(path)


@pytest.fixture(scope="module")
def trained(tarball, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("run"))
    best = cls_train.main(["--data", tarball, "--epochs", "3", "--output", output, *TINY])
    return output, best


def test_reads_the_official_format(tarball, tmp_path):
    data = cls_train.load_cifar10(tarball)
    assert data["train"][0].shape == (400, 32, 32, 3) and data["train"][0].dtype == np.uint8
    assert data["test"][1].shape == (100,)
    import tarfile

    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path)
    extracted = cls_train.load_cifar10(str(tmp_path))
    np.testing.assert_array_equal(extracted["train"][0], data["train"][0])


def test_learns_well_above_chance(trained):
    output, best = trained
    assert best >= 60.0, f"best top-1 {best:.1f}% on a 10-class set"
    log = open(os.path.join(output, "log.txt")).read()
    # each epoch: train loss, test top-1, img/s and LR
    epochs = re.findall(r"^epoch (\d)/3  train loss [0-9.]+  test top-1 ([0-9.]+)%  [0-9.]+ img/s  lr [0-9.]+e[-+]\d+$",
                        log, re.M)
    assert [e for e, _ in epochs] == ["1", "2", "3"] and max(float(t) for _, t in epochs) == pytest.approx(best), log
    assert f"best test top-1: {best:.2f}%" in log
    for name in ("model.pdparams", "optimizer.pdopt", "state.json"):
        assert os.path.isfile(os.path.join(output, "last", name))
        assert os.path.isfile(os.path.join(output, "best", name))


def test_interrupted_and_resumed_equals_uninterrupted(tarball, trained, tmp_path):
    output, _ = trained
    resumed = str(tmp_path / "resumed")
    cls_train.main(["--data", tarball, "--epochs", "3", "--output", resumed, "--stop-after", "2", *TINY])
    cls_train.main(["--data", tarball, "--epochs", "3", "--resume", resumed, *TINY])
    full = paddle.load(os.path.join(output, "last", "model.pdparams"))
    again = paddle.load(os.path.join(resumed, "last", "model.pdparams"))
    for name, value in full.items():
        np.testing.assert_allclose(again[name].numpy(), value.numpy(), rtol=0, atol=1e-6, err_msg=name)


def test_eval_only_and_predict(tarball, trained, capsys):
    output, best = trained
    weights = os.path.join(output, "best", "model.pdparams")
    top1 = cls_train.main(["--data", tarball, "--eval-only", "--weights", weights, *TINY])
    assert top1 == pytest.approx(best)
    table = capsys.readouterr().out
    assert "airplane" in table and "truck" in table and "test top-1" in table
    from PIL import Image

    image = cls_train.synthetic_cifar10(train_per_class=1, test_per_class=1, seed=3)["test"][0][0]
    path = os.path.join(output, "probe.png")
    Image.fromarray(image).save(path)
    top5 = cls_train.main(["--predict", path, "--weights", weights, *TINY])
    # the model's own logits on the picture, normalised with CIFAR's mean and std: the five largest softmax
    # probabilities, largest first, with their class names
    model = create_classifier("swin_tiny_patch2_window4_32", num_classes=10, embed_dim=16, depths=(1, 1, 1, 1),
                              num_heads=(1, 1, 2, 2))
    model.set_state_dict(paddle.load(weights))
    model.eval()
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    x = ((image / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype("float32")
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x)).numpy()[0].astype("float64")
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)[:5]
    assert probs[order[0]] - probs[order[1]] > 1e-3  # a clear first place, so the order is well defined
    cifar = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert [name for name, _ in top5] == [cifar[i] for i in order], (top5, probs)
    np.testing.assert_allclose([p for _, p in top5], probs[order], rtol=0, atol=1e-5)


def test_threads_default_to_every_core(trained, tmp_path, monkeypatch):
    """--threads N gives Paddle's CPU kernels N threads; without it, every core (Paddle's own default is one)."""
    calls = []
    monkeypatch.setattr(paddle.base.core, "set_num_threads", calls.append)
    from PIL import Image

    path = str(tmp_path / "probe.png")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)
    args = ["--predict", path, "--weights", os.path.join(trained[0], "best", "model.pdparams"), "--embed-dim", "16",
            "--depths", "1,1,1,1", "--num-heads", "1,1,2,2"]
    cls_train.main([*args, "--threads", "1"])
    cls_train.main(args)
    assert calls == [1, available_cores()]


def test_missing_data_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        cls_train.main(["--data", str(tmp_path / "nowhere"), "--epochs", "1", *TINY])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        cls_train.main(["--data", str(empty), "--epochs", "1", *TINY])


def test_default_recipe_is_the_readmes():
    """The README's default recipe: Swin-T at 32 px (patch 2, window 4), AdamW lr 1e-3 for batch 128, weight decay
    0.05, 5 warmup epochs, label smoothing 0.1, gradient clipping at 5, drop path 0.1, no mixup, cutmix or
    RandAugment unless asked; random crop with 4 px of padding, and flips."""
    args = cls_train.parse_args(["--synthetic"])
    assert (args.model, args.optimizer, args.lr, args.batch_size, args.weight_decay, args.warmup_epochs,
            args.smoothing, args.clip_grad, args.drop_path, args.mixup, args.cutmix, args.randaugment) == (
        "swin_tiny_patch2_window4_32", "adamw", 1e-3, 128, 0.05, 5, 0.1, 5.0, 0.1, 0.0, 0.0, 0)
    model = cls_train.build_model(args)
    assert model.img_size == (32, 32) and model.patch_size == 2 and model.layers[0].window_size == 4
    rng = np.random.default_rng(0)
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = 255  # white left half: a flip shows on the right
    crops = cls_train.random_crop_flip(np.repeat(image[None], 400, axis=0), rng)
    top_padding = [int((c.max(axis=(1, 2)) == 0).argmin()) for c in crops]  # zero rows above the picture
    assert sorted(set(top_padding)) == [0, 1, 2, 3, 4], sorted(set(top_padding))
    flipped = [c[:, :16].mean() < c[:, 16:].mean() for c in crops]
    assert 0.4 < np.mean(flipped) < 0.6


def test_schedule_and_decay_groups():
    factors = [cls_train.lr_factor(s, 10, 100) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] < 0.02
    model = cls_train.create_classifier("swin_tiny_patch2_window4_32", embed_dim=16, depths=(1, 1, 1, 1),
                                        num_heads=(1, 1, 2, 2), ape=True)
    skipped = {n for n, p in model.named_parameters() if cls_train.no_decay(n, p)}
    assert "absolute_pos_embed" in skipped and "layers.0.blocks.0.attn.relative_position_bias_table" in skipped
    assert "norm.weight" in skipped and "head.bias" in skipped and "head.weight" not in skipped


def test_mix_and_augment_keep_shapes():
    rng = np.random.default_rng(0)
    images = cls_train.synthetic_cifar10(train_per_class=1, test_per_class=1)["train"][0]
    assert cls_train.rand_augment(images, rng).shape == images.shape
    targets = cls_train.soft_targets(np.arange(10), 10, 0.1)
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0)):
        mixed, soft = cls_train.mix_batch(cls_train.normalize(images), targets, rng, mixup, cutmix)
        assert mixed.shape == (10, 3, 32, 32)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)


def test_divergence_stops_and_keeps_last_good_checkpoint(tarball, tmp_path):
    output = str(tmp_path / "run")
    cls_train.main(["--data", tarball, "--epochs", "3", "--output", output, "--stop-after", "1", *TINY])
    good = paddle.load(os.path.join(output, "last", "model.pdparams"))
    with pytest.raises(SystemExit, match="loss diverged .* last good checkpoint is kept"):
        cls_train.main(["--data", tarball, "--epochs", "3", "--resume", output, *TINY, "--lr", "1e30",
                        "--clip-grad", "0"])
    kept = paddle.load(os.path.join(output, "last", "model.pdparams"))
    for name, value in good.items():
        np.testing.assert_array_equal(kept[name].numpy(), value.numpy(), err_msg=name)
    assert "loss diverged" in open(os.path.join(output, "log.txt")).read()


def test_distributed_sharding_logic():
    """What each of 2 ranks sees: training shares are equal and cover every image; evaluation sees each once."""
    rng_seed = 5
    shares = [np.concatenate(list(cls_train.batches(11, 4, np.random.default_rng(rng_seed), rank, 2)))
              for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 6
    assert set(np.concatenate(shares)) == set(range(11))
    evaluation = [np.concatenate(list(cls_train.batches(11, 4, None, rank, 2))) for rank in range(2)]
    assert sorted(np.concatenate(evaluation)) == list(range(11))
