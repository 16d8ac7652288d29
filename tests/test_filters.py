"""``filters`` and ``gfnet visualize``: the two views of each global filter, checked against
the layer itself, and the figure, arrays and summary the command writes."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gfnet_cli import GFNetConfig, create_model, save_model
from gfnet_cli.analysis.filters import (
    LOW_FREQUENCY_RADIUS,
    filter_modules,
    filters,
    layer_filters,
    parse_layers,
)
from gfnet_cli.errors import UsageError
from gfnet_cli.models.layers import GlobalFilter, fused_inference
from tests.conftest import assert_one_line_error

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """A flat model on a non-square 4x5 token grid (odd width: no Nyquist column)."""
    torch.manual_seed(3)
    config = GFNetConfig(patch_size=8, embed_dim=8, depth=3, img_size=[32, 40], num_classes=3)
    return save_model(create_model(config), tmp_path_factory.mktemp("flat") / "model")


@pytest.fixture(scope="module")
def pyramid_folder(tmp_path_factory):
    torch.manual_seed(4)
    config = GFNetConfig(
        kind="pyramid", patch_size=4, embed_dim=[8, 8, 16, 16], depth=[1, 2, 1, 1],
        img_size=64, num_classes=3, init_values=1e-5,
    )  # fmt: skip
    return save_model(create_model(config), tmp_path_factory.mktemp("pyramid") / "model")


def _module(grid, channels=3, seed=0) -> GlobalFilter:
    torch.manual_seed(seed)
    module = GlobalFilter(channels, grid)
    with torch.no_grad():
        module.complex_weight.normal_()
    return module.eval()


# ------------------------------------------------------------------------- the two views
@pytest.mark.parametrize("grid", [(4, 5), (6, 6), (7, 4)])
@pytest.mark.parametrize("fused", [True, False])
def test_spatial_filter_is_the_layers_impulse_response(grid, fused):
    # The global filter is a circular convolution with k = irfft2(W): a unit impulse at the
    # origin of one channel comes out as that channel's kernel (uncentred).
    module = _module(grid)
    view = layer_filters(1, 1, "filter.complex_weight", module)
    rows, cols = grid
    for channel in range(3):
        impulse = torch.zeros(1, rows, cols, 3)
        impulse[0, 0, 0, channel] = 1.0
        with fused_inference(fused), torch.no_grad():
            response = module(impulse)[0, :, :, channel].numpy()
        kernel = np.fft.ifftshift(view.spatial[channel])
        np.testing.assert_allclose(kernel, response, atol=1e-6)
        assert np.abs(np.delete(module(impulse)[0].detach().numpy(), channel, -1)).max() < 1e-6


@pytest.mark.parametrize("grid", [(4, 5), (6, 6)])
def test_frequency_view_is_the_hermitian_completion_of_the_weight(grid):
    module = _module(grid, seed=1)
    view = layer_filters(1, 1, "p", module)
    rows, cols = grid
    weight = torch.view_as_complex(module.complex_weight.detach()).permute(2, 0, 1).numpy()
    full = np.fft.ifftshift(view.frequency, axes=(-2, -1))  # zero frequency back at [0, 0]
    free = range(1, (cols - 1) // 2 + 1)  # columns the inverse real FFT leaves alone
    for v in free:
        for u in range(rows):
            np.testing.assert_allclose(full[:, u, v], np.abs(weight[:, u, v]), rtol=1e-5)
            # Hermitian symmetry: the other half mirrors through the origin
            np.testing.assert_allclose(full[:, -u % rows, cols - v], np.abs(weight[:, u, v]),
                                       rtol=1e-5)  # fmt: skip
    # zero-frequency column: what the layer applies is the Hermitian part of W there
    hermitian = (weight[:, :, 0] + np.conj(weight[:, (-np.arange(rows)) % rows, 0])) / 2
    np.testing.assert_allclose(full[:, :, 0], np.abs(hermitian), rtol=1e-5, atol=1e-6)
    assert view.frequency.shape == (3, rows, cols)


def test_flat_filter_is_a_centred_impulse_with_no_frequency_preference():
    module = GlobalFilter(2, (8, 8))
    with torch.no_grad():
        module.complex_weight.zero_()
        module.complex_weight[..., 0] = 1.0  # W = 1 everywhere: the identity
    view = layer_filters(1, 1, "p", module)
    expected = np.zeros((8, 8))
    expected[4, 4] = 1.0
    np.testing.assert_allclose(view.spatial[0], expected, atol=1e-6)
    stats = view.stats()
    assert stats["low_frequency_energy"] == pytest.approx(stats["flat_low_frequency_energy"])
    assert stats["zero_frequency_gain"] == pytest.approx(1.0)


def test_a_low_pass_filter_puts_its_energy_at_low_frequencies():
    module = GlobalFilter(2, (8, 8))
    with torch.no_grad():
        module.complex_weight.zero_()
        module.complex_weight[0, 0, :, 0] = 3.0  # only the zero frequency passes
    stats = layer_filters(1, 1, "p", module).stats()
    assert stats["low_frequency_energy"] == pytest.approx(1.0)
    assert stats["spectral_centroid"] == pytest.approx(0.0)
    assert stats["peak_frequency"] == [0.0, 0.0]

    with torch.no_grad():  # and one that passes only the highest frequency
        module.complex_weight.zero_()
        module.complex_weight[4, 4, :, 0] = 3.0
    stats = layer_filters(1, 1, "p", module).stats()
    assert stats["low_frequency_energy"] == pytest.approx(0.0)
    assert stats["spectral_centroid"] > LOW_FREQUENCY_RADIUS
    assert stats["peak_radius"] == pytest.approx(np.hypot(0.5, 0.5))


# ---------------------------------------------------------------------------- selection
def test_layers_parse_all_lists_and_ranges():
    assert parse_layers(None, 4) == [1, 2, 3, 4]
    assert parse_layers("all", 4) == [1, 2, 3, 4]
    assert parse_layers("3, 1-2", 4) == [1, 2, 3]
    assert parse_layers([4, 2, 2], 4) == [2, 4]
    for bad in ("0", "5", "2-1", "x", "1,,2", [7]):
        with pytest.raises(UsageError) as caught:
            parse_layers(bad, 4)
        assert caught.value.param == "layers"


def test_pyramid_layers_are_numbered_through_the_stages(pyramid_folder):
    result = filters(str(pyramid_folder))
    assert [layer.layer for layer in result.layers] == [1, 2, 3, 4, 5]
    assert [layer.stage for layer in result.layers] == [1, 2, 2, 3, 4]
    assert [layer.grid for layer in result.layers] == [(16, 16), (8, 8), (8, 8), (4, 4), (2, 2)]
    assert [layer.channels for layer in result.layers] == [8, 8, 8, 16, 16]
    assert result.layers[3].parameter == "blocks.2.0.filter.complex_weight"
    assert len(filter_modules(create_model(GFNetConfig(depth=0, patch_size=8, img_size=32)))) == 0


def test_filters_accepts_a_model_object_and_selects_layers(flat_folder):
    from gfnet_cli import load_model

    model = load_model(str(flat_folder))
    result = filters(model, layers="2-3")
    assert [layer.layer for layer in result.layers] == [2, 3]
    assert result.num_layers == 3
    summary = result.summary()
    assert summary["layers"][0]["shape"] == [4, 3, 8, 2]  # (rows, cols//2+1, C, re/im)
    assert summary["layers"][0]["grid"] == [4, 5]
    for layer in summary["layers"]:
        assert 0 <= layer["low_frequency_energy"] <= 1
        assert 0 <= layer["flat_low_frequency_energy"] <= 1


# ---------------------------------------------------------------------------- the command
def test_visualize_writes_figure_arrays_and_summary(run_cli, flat_folder, tmp_path):
    png, arrays = tmp_path / "filters.png", tmp_path / "filters.safetensors"
    result = run_cli("visualize", flat_folder, "--output", png, "--data", arrays,
                     "--layers", "1,3", "--channels", "2", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout: the JSON document only
    assert [layer["layer"] for layer in summary["layers"]] == [1, 3]
    assert summary["channels_shown"] == 2 and summary["output"] == str(png)
    assert png.read_bytes()[:8] == PNG_MAGIC
    with safe_open(str(arrays), "pt") as handle:
        keys = set(handle.keys())
        assert keys == {
            "blocks.0.filter.frequency", "blocks.0.filter.spatial",
            "blocks.2.filter.frequency", "blocks.2.filter.spatial",
        }  # fmt: skip
        assert tuple(handle.get_tensor("blocks.2.filter.spatial").shape) == (8, 4, 5)
        metadata = handle.metadata()
    assert [layer["layer"] for layer in json.loads(metadata["layers"])] == [1, 3]
    assert "fftshift" in metadata["layout"]

    again = run_cli("visualize", flat_folder, "--output", png)
    assert_one_line_error(again, 2, "already exists")
    assert run_cli("visualize", flat_folder, "--output", png, "--overwrite").exit_code == 0


def test_visualize_pyramid_figure_and_table(run_cli, pyramid_folder, tmp_path):
    png = tmp_path / "h.png"
    result = run_cli("visualize", pyramid_folder, "-o", png, "--scale", "layer")
    assert result.exit_code == 0, result.stderr
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "stage" in result.stdout and "16x16" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "9"], "--layers must be numbers from 1 to 3"),
        (["--channels", "0"], "--channels must be at least 1"),
        (["--output", "figure.jpg"], "--output must end in .png"),
        (["--data", "arrays.npz"], "--data must end in .safetensors"),
        (["--scale", "global"], "--scale must be one of panel, layer"),
    ],
)
def test_visualize_bad_input_exits_2(run_cli, flat_folder, tmp_path, args, message):
    result = run_cli("visualize", flat_folder, *args)
    assert_one_line_error(result, 2, message)


def test_visualize_without_matplotlib_names_the_extra(run_cli, flat_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    result = run_cli("visualize", flat_folder, "--output", tmp_path / "f.png")
    assert_one_line_error(result, 2, "pip install '.[plot]' in the gfnet-cli clone")
    assert not (tmp_path / "f.png").exists()
    # the summary and the arrays need no matplotlib
    arrays = tmp_path / "f.safetensors"
    assert run_cli("visualize", flat_folder, "--data", arrays, "--json").exit_code == 0
    assert arrays.is_file()


def test_filters_is_exported_lazily():
    import gfnet_cli

    assert gfnet_cli.filters is filters
    assert "filters" in gfnet_cli.__all__ and "robustness" in gfnet_cli.__all__
