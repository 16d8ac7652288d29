"""The global filter's form chosen per case (``filter_form("auto")``), bf16 DFT products
under bf16 autocast, and models whose MLP layers were replaced (quantized) by the user."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from gfnet_cli.models import layers
from gfnet_cli.models.layers import (
    GlobalFilter,
    bf16_dft,
    filter_form,
    filter_form_choices,
    record_filter_forms,
)


@pytest.fixture(autouse=True)
def _fresh_choices():
    layers.clear_filter_form_choices()
    yield
    layers.clear_filter_form_choices()


def _filter(channels: int, grid: tuple[int, int]) -> GlobalFilter:
    gfilter = GlobalFilter(channels, grid)
    with torch.no_grad():
        gfilter.complex_weight.normal_()  # far from the small init: a harder test
    return gfilter


@pytest.mark.parametrize("grid", [(7, 7), (14, 14), (8, 5)], ids=["7x7", "14x14", "8x5"])
def test_auto_is_the_default_and_agrees_with_the_fft_form(grid):
    gfilter = _filter(16, grid).eval()
    x = torch.randn(3, *grid, 16)
    with torch.inference_mode():
        with record_filter_forms() as ran:
            auto = gfilter(x)
        with filter_form("fft"):
            fft = gfilter(x)
    assert len(ran) == 1 and ran <= {"fft", "matmul"}
    torch.testing.assert_close(auto, fft, atol=1e-5, rtol=0)
    (case,) = filter_form_choices()
    assert case == f"cpu {grid[0]}x{grid[1]}x16 batch<=4 float32 forward"
    assert filter_form_choices()[case] == next(iter(ran))


def test_auto_measures_each_case_once():
    gfilter = _filter(8, (6, 6)).eval()
    with torch.inference_mode():
        for batch in (3, 4, 3):  # one bucket: batches up to 4
            gfilter(torch.randn(batch, 6, 6, 8))
        assert len(filter_form_choices()) == 1
        gfilter(torch.randn(5, 6, 6, 8))  # the next bucket
        with torch.autocast("cpu", dtype=torch.bfloat16):
            gfilter(torch.randn(5, 6, 6, 8))
    assert sorted(filter_form_choices()) == [
        "cpu 6x6x8 batch<=4 float32 forward",
        "cpu 6x6x8 batch<=8 bfloat16 forward",
        "cpu 6x6x8 batch<=8 float32 forward",
    ]


@pytest.mark.parametrize("form", ["fft", "matmul"])
def test_a_fixed_form_overrides_auto_and_measures_nothing(form):
    gfilter = _filter(8, (6, 6)).eval()
    with torch.inference_mode(), filter_form(form), record_filter_forms() as ran:
        gfilter(torch.randn(2, 6, 6, 8))
    assert ran == {form}
    assert filter_form_choices() == {}


def test_auto_in_training_measures_forward_and_backward_without_touching_grads():
    gfilter = _filter(8, (7, 7)).train()
    x = torch.randn(2, 7, 7, 8, requires_grad=True)
    with filter_form("fft"):
        gfilter(x).square().sum().backward()
    expected_weight, expected_x = gfilter.complex_weight.grad.clone(), x.grad.clone()
    gfilter.complex_weight.grad, x.grad = None, None
    gfilter(x).square().sum().backward()  # auto: measures both forms, then runs one
    (case,) = filter_form_choices()
    assert case.endswith("forward+backward")
    # the trial runs added nothing: one backward's gradients, equal in either form
    torch.testing.assert_close(gfilter.complex_weight.grad, expected_weight, atol=1e-4, rtol=0)
    torch.testing.assert_close(x.grad, expected_x, atol=1e-5, rtol=0)


def test_a_training_choice_holds_for_every_batch_and_survives_a_checkpoint():
    """Training measures once per filter, whatever the batch (the last, smaller one too), so
    the first step's choices are all a run makes; their plain form reloads exactly, and a
    reloaded choice is used without measuring again."""
    gfilter = _filter(8, (7, 7)).train()
    for batch in (4, 1, 3):
        gfilter(torch.randn(batch, 7, 7, 8, requires_grad=True)).sum().backward()
    (case,) = filter_form_choices(training=True)
    assert case == "cpu 7x7x8 any batch float32 forward+backward"
    saved = layers.filter_form_state()
    assert json.loads(json.dumps(saved)) == saved  # plain values, as a checkpoint keeps them
    flipped = {"fft": "matmul", "matmul": "fft"}[filter_form_choices()[case]]
    saved[0][-1] = flipped
    layers.clear_filter_form_choices()
    layers.load_filter_form_state([*saved, ["cpu", None, [7], 0, "torch.nope"], "junk"])
    assert filter_form_choices() == {case: flipped}  # unreadable entries are skipped
    with record_filter_forms() as ran:
        gfilter(torch.randn(2, 7, 7, 8, requires_grad=True)).sum().backward()
    assert ran == {flipped}


@pytest.mark.parametrize(("matmul_share", "expected"), [(0.9, "fft"), (0.8, "matmul")])
def test_auto_takes_the_matmul_form_only_by_a_margin(monkeypatch, matmul_share, expected):
    """Timed alone the matmul form looks better than inside a model, and near ties flip
    between runs: it must beat the FFT form by AUTO_MATMUL_MARGIN (a clock that makes every
    FFT run take 1 s and every matmul run ``matmul_share`` s)."""
    durations = {"fft": 1.0, "matmul": matmul_share}
    clock = {"now": 0.0, "calls": 0}

    def fake_perf_counter() -> float:
        form = ("fft", "matmul")[(clock["calls"] // 2) % 2]  # start, end; fft then matmul
        if clock["calls"] % 2:
            clock["now"] += durations[form]
        clock["calls"] += 1
        return clock["now"]

    monkeypatch.setattr(layers.time, "perf_counter", fake_perf_counter)
    gfilter = _filter(8, (6, 6)).eval()
    with torch.inference_mode(), record_filter_forms() as ran:
        gfilter(torch.randn(2, 6, 6, 8))
    assert ran == {expected}
    assert layers.AUTO_MATMUL_MARGIN == 0.85


def test_auto_takes_the_fft_form_on_the_meta_device_without_measuring():
    with torch.device("meta"):
        gfilter = GlobalFilter(8, (6, 6))
    with torch.no_grad(), record_filter_forms() as ran:
        out = gfilter(torch.zeros(2, 6, 6, 8, device="meta"))
    assert ran == {"fft"} and out.shape == (2, 6, 6, 8)
    assert filter_form_choices() == {}


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="auto, fft, matmul"):
        with filter_form("fast"):
            pass


# --------------------------------------------------------------------------- bf16 DFT products
def test_bf16_autocast_runs_the_dft_products_in_bf16():
    gfilter = _filter(16, (14, 14)).eval()
    x = torch.randn(2, 14, 14, 16)
    with torch.inference_mode(), filter_form("matmul"):
        fp32 = gfilter(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = gfilter(x)
            with bf16_dft(False):
                kept = gfilter(x)
    assert bf16.dtype == torch.bfloat16 and kept.dtype == torch.float32
    assert torch.equal(kept, fp32)
    error = (bf16.float() - fp32).abs().max().item()
    assert 0 < error <= 0.02 * fp32.abs().max().item()  # bf16's 8-bit mantissa, not garbage


def test_grids_above_the_bf16_limit_keep_fp32_dft_products():
    rows = layers.BF16_DFT_MAX_TOKENS // 64 + 1
    gfilter = _filter(2, (rows, 64)).eval()
    with torch.inference_mode(), filter_form("matmul"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = gfilter(torch.randn(1, rows, 64, 2))
    assert out.dtype == torch.float32


@pytest.fixture(scope="module")
def digits_model():
    """A GFNet trained briefly on scikit-learn's digits (real scans, 16 px, a 4 x 4 grid)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from gfnet_cli import GFNetConfig, create_model

    digits = load_digits()
    scans = torch.from_numpy(digits.images).float().div(16.0).sub(0.5).div(0.25)
    images = scans.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None].expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target)
    train, test = train_test_split(
        range(len(labels)), test_size=0.2, random_state=0, stratify=digits.target
    )
    torch.manual_seed(0)
    config = GFNetConfig(patch_size=4, embed_dim=32, depth=2, img_size=16, num_classes=10)
    model = create_model(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    train = torch.tensor(train)
    for _ in range(6):
        for batch in train[torch.randperm(len(train))].split(64):
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test = torch.tensor(test)
    return model.eval(), images[test].contiguous(), labels[test]


@pytest.mark.slow
def test_bf16_dft_agrees_with_fp32_on_real_images(digits_model):
    model, images, labels = digits_model
    with torch.inference_mode():
        with filter_form("fft"):
            fp32 = model(images)
        with filter_form("matmul"), torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(images).float()
    assert (fp32.argmax(1) == labels).float().mean() > 0.7  # it learned (chance: 0.1)
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() >= 0.995
    assert (bf16 - fp32).abs().max() <= 0.05 * fp32.abs().max()


# --------------------------------------------------------------------------- user-quantized MLPs
def test_a_dynamically_quantized_model_runs_and_agrees(digits_model):
    model, images, _ = digits_model
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
    )
    assert type(quantized.blocks[0].mlp.fc1) is not torch.nn.Linear  # really replaced
    with torch.inference_mode():
        expected = model(images)
        got = quantized(images)  # the fused CPU path would call fc1.weight.dtype: a method's
    assert got.shape == expected.shape
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.95


def test_the_legacy_tracer_records_one_form_and_measures_nothing():
    gfilter = _filter(8, (6, 6)).eval()
    x = torch.randn(2, 6, 6, 8)
    with torch.no_grad():
        traced = torch.jit.trace(gfilter, (x,), check_trace=False)
        assert filter_form_choices() == {}
        torch.testing.assert_close(traced(x), gfilter(x), atol=1e-5, rtol=0)
