"""The global filter's form chosen per case (``filter_form("auto")``), bf16 DFT products
under bf16 autocast, and models whose MLP layers were replaced (quantized) by the user."""

from __future__ import annotations

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
