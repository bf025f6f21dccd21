"""Model behaviour: shapes at any size, parameter counts, freezing, drop path, recompute, imports."""
import contextlib
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, SMALL
from swin_backbone import (SwinTransformer, create_backbone, create_classifier,
                           swin_tiny_patch2_window4_32)
from swin_backbone import rows
from swin_backbone.blocks import shifted_window_mask, window_partition, window_reverse


def count(model) -> int:
    return sum(int(np.prod(p.shape)) for p in model.parameters())


@pytest.mark.parametrize("name,expected", [
    ("swin_tiny_patch4_window7_224", 28_288_354),
    ("swin_small_patch4_window7_224", 49_606_258),
    ("swin_base_patch4_window7_224", 87_768_224),
    ("swin_large_patch4_window7_224", 196_532_476),
])
def test_classifier_parameter_counts(name, expected):
    assert count(create_classifier(name)) == expected


def test_tiny_ten_classes_and_backbone_counts():
    assert count(create_classifier("swin_tiny_patch4_window7_224", num_classes=10)) == 27_527_044
    assert count(create_backbone("swin_tiny_patch4_window7_224")) == 27_520_698


def test_flops_as_the_authors_count():
    assert round(create_backbone("swin_tiny_patch4_window7_224").flops(224, 224) / 1e9, 1) == 4.5


@pytest.mark.parametrize("height,width", [(1, 1), (31, 47), (250, 333), (203, 517), (800, 1333)])
@pytest.mark.parametrize("window_size", [7, 12])
def test_backbone_any_size(height, width, window_size):
    model = SwinTransformer(**SMALL, window_size=window_size)
    model.eval()
    with paddle.no_grad():
        outs = model(paddle.randn([1, 3, height, width]))
    h, w = -(-height // 4), -(-width // 4)
    for i, out in enumerate(outs):
        assert out.shape == [1, 16 * 2 ** i, h, w]
        assert bool(paddle.isfinite(out).all())
        h, w = -(-h // 2), -(-w // 2)


def test_backbone_at_2048():
    model = SwinTransformer(**SMALL, window_size=7)
    model.eval()
    with paddle.no_grad():
        outs = model(paddle.randn([1, 3, 2048, 2047]))
    assert [o.shape[2:] for o in outs] == [[512, 512], [256, 256], [128, 128], [64, 64]]


def test_gradients_flow_at_odd_size():
    model = SwinTransformer(**SMALL, window_size=7, drop_path_rate=0.1)
    x = paddle.randn([2, 3, 45, 61])
    x.stop_gradient = False
    sum(o.mean() for o in model(x)).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not float(p.grad.abs().sum()) > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_out_indices_and_channels():
    model = SwinTransformer(**SMALL, out_indices=(1, 3))
    model.eval()
    outs = model(paddle.randn([1, 3, 64, 64]))
    assert [o.shape[1] for o in outs] == model.out_channels == [32, 128]
    assert model.out_strides == [8, 32]
    assert not hasattr(model, "norm0") and hasattr(model, "norm3")


def test_classifier_shrinks_small_stage_windows():
    model = swin_tiny_patch2_window4_32(num_classes=10)
    assert [s.window_size for s in model.layers] == [4, 4, 4, 2]
    assert [s.shift_size for s in model.layers] == [2, 2, 0, 0]
    x = paddle.randn([2, 3, 32, 32])
    assert model.forward_features(x).shape == [2, 768]
    assert model(x).shape == [2, 10]


def test_window_partition_roundtrip_and_mask():
    x = paddle.randn([2, 14, 21, 5])
    windows = window_partition(x, 7)
    assert windows.shape == [12, 49, 5]
    np.testing.assert_array_equal(window_reverse(windows, 7, 14, 21).numpy(), x.numpy())
    mask = shifted_window_mask(14, 21, 7, 3).numpy()
    assert mask.shape == (6, 49, 49)
    assert not mask[0].any()  # an interior window sees no wrapped-around tokens
    assert mask[-1].any() and (mask[-1] == mask[-1].T).all()


@pytest.mark.parametrize("height,width,window_size", [(250, 333, 7), (203, 517, 12), (64, 64, 7), (9, 5, 7)])
def test_gather_path_equals_portable_path(height, width, window_size):
    """The eager row-gather path and the pad/roll/transpose path (used by static graphs) agree, with grads."""
    model = SwinTransformer(**SMALL, window_size=window_size, drop_path_rate=0.0)
    x = paddle.randn([2, 3, height, width])
    results = []
    for context in (contextlib.nullcontext(), rows.portable()):
        with context:
            model.clear_gradients()
            outs = model(x)
            sum((o * o).mean() for o in outs).backward()
            results.append(([o.numpy() for o in outs], {n: p.grad.numpy() for n, p in model.named_parameters()}))
    (fast, fast_grads), (plain, plain_grads) = results
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    for name, grad in plain_grads.items():
        np.testing.assert_allclose(fast_grads[name], grad, rtol=1e-4, atol=1e-5, err_msg=name)


def test_drop_path_is_linear_over_all_blocks():
    model = SwinTransformer(embed_dim=16, depths=(2, 2, 6, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.3)
    rates = [b.drop_path.drop_prob for stage in model.layers for b in stage.blocks]
    np.testing.assert_allclose(rates, np.linspace(0, 0.3, 12), atol=1e-12)


@pytest.mark.parametrize("frozen_stages", [1, 2])
def test_frozen_stages_stay_unchanged(frozen_stages):
    model = SwinTransformer(**SMALL, frozen_stages=frozen_stages, drop_path_rate=0.1)
    model.train()
    assert not model.patch_embed.training
    frozen = {n: p.numpy().copy() for n, p in model.named_parameters()
              if n.startswith("patch_embed") or (frozen_stages >= 2 and n.startswith("layers.0."))}
    trainable = {n: p.numpy().copy() for n, p in model.named_parameters() if n not in frozen}
    assert frozen and all(p.stop_gradient for n, p in model.named_parameters() if n in frozen)
    optimizer = paddle.optimizer.AdamW(1e-2, parameters=model.parameters(), weight_decay=0.05)
    sum(o.mean() for o in model(paddle.randn([2, 3, 64, 64]))).backward()
    optimizer.step()
    params = dict(model.named_parameters())
    for name, before in frozen.items():
        np.testing.assert_array_equal(params[name].numpy(), before, err_msg=name)
    changed = [n for n, before in trainable.items() if not np.array_equal(params[n].numpy(), before)]
    assert len(changed) == len(trainable)
    if frozen_stages >= 2:
        assert not model.layers[0].training and model.layers[1].training


def test_use_checkpoint_gives_same_gradients():
    paddle.seed(1)
    plain = SwinTransformer(**SMALL, window_size=7)
    checkpointed = SwinTransformer(**SMALL, window_size=7, use_checkpoint=True)
    checkpointed.set_state_dict(plain.state_dict())
    x = paddle.randn([1, 3, 57, 43])
    grads = []
    for model in (plain, checkpointed):
        model.train()
        paddle.seed(2)  # same drop-path draws; recompute must replay them in backward
        sum((o * o).mean() for o in model(x)).backward()
        grads.append({n: p.grad.numpy() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        np.testing.assert_allclose(grads[1][name], grad, rtol=1e-5, atol=1e-6, err_msg=name)


def block_calls(model) -> list:
    """A counter per Swin block of how often its forward runs (a pre-hook on each block)."""
    calls = []
    for stage in model.layers:
        for block in stage.blocks:
            calls.append(0)
            block.register_forward_pre_hook(lambda layer, inputs, i=len(calls) - 1: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_use_checkpoint_runs_blocks_again_in_backward():
    """Recomputation: each block runs once in the forward pass and once more in the backward pass."""
    for use_checkpoint, after_backward in ((False, 1), (True, 2)):
        model = SwinTransformer(**SMALL, window_size=7, use_checkpoint=use_checkpoint)
        model.train()
        calls = block_calls(model)
        loss = sum((o * o).mean() for o in model(paddle.randn([1, 3, 57, 43])))
        assert calls == [1] * 8, (use_checkpoint, calls)
        loss.backward()
        assert calls == [after_backward] * 8, (use_checkpoint, calls)
    model.eval()  # inference keeps nothing for backward: no recomputation
    calls = block_calls(model)
    with paddle.no_grad():
        model(paddle.randn([1, 3, 57, 43]))
    assert calls == [1] * 8


def activations_mb(model, x) -> float:
    """MB that Paddle's allocator holds after the forward pass for the backward pass (the activations kept)."""
    stat = paddle.base.core.host_memory_stat_current_value  # CPU allocator statistics, exact byte counts
    sum(o.mean() for o in model(x)).backward()  # warm-up: index maps and masks are cached on first use
    model.clear_gradients()
    before = stat("Allocated", 0)
    outs = model(x)
    kept = stat("Allocated", 0) - before
    sum(o.mean() for o in outs).backward()
    return kept / 2 ** 20


def test_use_checkpoint_keeps_less_activation_memory():
    """use_checkpoint keeps only each block's input for the backward pass (README: about half the activation
    memory; measured here 1.6 MB instead of 13.8 MB)."""
    x = paddle.randn([2, 3, 128, 128])
    plain, checkpointed = (activations_mb(SwinTransformer(**SMALL, use_checkpoint=flag), x) for flag in (False, True))
    assert plain > 5 and checkpointed < 0.5 * plain, (plain, checkpointed)


def test_frozen_eval_survives_train_call():
    model = SwinTransformer(**SMALL, frozen_stages=3)
    model.eval()
    model.train()
    assert [s.training for s in model.layers] == [False, False, True, True]


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="out_indices"):
        SwinTransformer(**SMALL, out_indices=(4,))
    with pytest.raises(ValueError, match="num_heads"):
        SwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(1,))
    with pytest.raises(KeyError, match="swin_tiny_patch4_window7_224"):
        create_classifier("swin_huge")


def test_model_imports_without_detection_or_segmentation():
    code = ("import sys; sys.modules['ppdet'] = None; sys.modules['paddleseg'] = None\n"
            "import swin_backbone; swin_backbone.SwinTransformer(embed_dim=16, depths=(2,), num_heads=(1,), out_indices=(0,))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
