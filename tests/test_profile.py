"""gfnet profile: shapes, counts, error rows. No timings (the fast path's parity: test_models)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from gfnet_cli import GFNetConfig, create_model, save_model
from gfnet_cli.commands.profile import (
    OUT_OF_MEMORY,
    ModelSpec,
    ProfileOptions,
    model_table,
    profile,
    profile_row,
)
from gfnet_cli.device import autocast_context, check_precision, resolve_device
from gfnet_cli.errors import UsageError
from gfnet_cli.models import GFNetArchitecture
from gfnet_cli.models.flops import config_gflops, model_gflops
from tests.conftest import assert_one_line_error

SPEC_KEYS = {
    "model",
    "resolution",
    "tokens",
    "batch_size",
    "device",
    "precision",
    "params",
    "gflops",
    "latency_ms",
    "images_per_second",
    "peak_memory_mb",
}
TINY = GFNetConfig(patch_size=8, embed_dim=32, depth=2, img_size=32, num_classes=10)


@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    TINY.save(folder)
    return folder


def tiny_spec(config: GFNetConfig = TINY) -> ModelSpec:
    return ModelSpec(name="tiny", mixer="gfnet", config=config.to_dict())


# --------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_profile_json_rows_compare_and_plot(run_cli, tmp_path):
    # big enough that every forward needs more than the kernel's RSS bookkeeping resolution
    tiny_folder = tmp_path / "tiny-model"
    tiny_folder.mkdir()
    TINY.replace(embed_dim=64).save(tiny_folder)
    plot = tmp_path / "figure.png"
    result = run_cli(
        "profile", "--model", tiny_folder, "--resolution", "64", "--resolution", "128",
        "--batch-size", "8", "--warmup", "1", "--repeats", "1",
        "--compare", "vit,resmlp", "--json", "--plot", plot,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = result.json()
    assert [(r["model"], r["resolution"]) for r in rows] == [
        ("tiny-model", 64), ("tiny-model", 128), ("vit", 64), ("vit", 128),
        ("resmlp", 64), ("resmlp", 128),
    ]  # fmt: skip
    for row in rows:
        assert SPEC_KEYS <= set(row), row
        assert "error" not in row
        assert row["batch_size"] == 8 and row["device"] == "cpu" and row["precision"] == "fp32"
        for key in ("params", "gflops", "latency_ms", "images_per_second", "peak_memory_mb"):
            assert row[key] > 0, (key, row)
        assert row["tokens"] == (row["resolution"] // 8) ** 2
    growth = {r["model"]: r["gflops"] for r in rows if r["resolution"] == 128}
    for r in rows:
        if r["resolution"] == 64:
            growth[r["model"]] /= r["gflops"]
    assert growth["vit"] > growth["tiny-model"] and growth["resmlp"] > growth["tiny-model"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_table_output(run_cli, tiny_folder):
    result = run_cli(
        "profile", "--model", tiny_folder, "--resolution", "32", "--repeats", "1", "--no-memory"
    )
    assert result.exit_code == 0, result.stderr
    assert "tiny" in result.stdout and "GFLOPs" in result.stdout


def test_profile_reports_the_spread_names_the_memory_and_shows_progress(run_cli, tiny_folder):
    result = run_cli("profile", "--model", tiny_folder, "--resolution", "32", "--resolution",
                     "64", "--repeats", "3", "--no-memory")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "min-max" in out and "forward" in out and "peak" not in out  # headers may wrap
    assert "the memory one forward pass adds (activations; the weights are not counted)" in out
    assert "profiling" in result.stderr and "2/2" in result.stderr  # the bar over rows
    rows = run_cli("profile", "--model", tiny_folder, "--resolution", "32", "--repeats", "3",
                   "--no-memory", "--json").json()  # fmt: skip
    assert rows[0]["latency_min_ms"] <= rows[0]["latency_ms"] <= rows[0]["latency_max_ms"]


def test_a_table_without_a_terminal_is_not_cut_to_80_columns(tiny_folder):
    """In a CI log or a captured subprocess no stream is a terminal: rich would lay the
    11-column table out in 80 columns and print its values as ``0.0…``."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "gfnet_cli", "profile", "--model", str(tiny_folder),
         "--resolution", "32", "--repeats", "1", "--no-memory"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    params = sum(p.numel() for p in create_model(TINY).parameters())
    assert f"{params / 1e6:.2f}M" in done.stdout and "…" not in done.stdout


def test_a_busy_machine_is_named_when_latencies_spread(monkeypatch, caplog):
    # The clock says one timed forward took 5x the others, as when another process takes
    # the cores: the row keeps its median and says how far its runs spread.
    import gfnet_cli.commands.profile as profiling

    durations = iter([0.01, 0.01, 0.01, 0.05, 0.01, 0.01])  # warm-up, then 5 timed
    calls = [0, 0.0]  # calls so far, the clock

    def clock() -> float:  # read at the start and at the end of each forward
        calls[0] += 1
        if calls[0] % 2 == 0:
            calls[1] += next(durations)
        return calls[1]

    monkeypatch.setattr(profiling.time, "perf_counter", clock)
    options = ProfileOptions(warmup=1, repeats=5, measure_memory=False, device="cpu")
    with caplog.at_level("WARNING", logger="gfnet_cli"):
        row = profiling.profile_row(tiny_spec(), 32, options, torch.device("cpu"))
    assert row.latency_ms == pytest.approx(10, rel=0.01)
    assert row.latency_max_ms == pytest.approx(50, rel=0.01)
    assert row.latency_min_ms == pytest.approx(10, rel=0.01)
    assert "the machine is busy" in caplog.text and "10.0 to 50.0 ms" in caplog.text


@pytest.mark.parametrize(
    "args, contains",
    [
        (["--model", "gfnet-nope"], "gfnet-nope"),
        (["--model", "gfnet-xs", "--resolution", "230"], "multiple of 16"),
        (["--model", "gfnet-xs", "--precision", "fp8"], "precision"),
        (["--model", "gfnet-xs", "--device", "cpu", "--precision", "fp16"], "fp16"),
        (["--model", "gfnet-xs", "--device", "tpu"], "device"),
        (["--model", "gfnet-xs", "--compare", "vit,mixer"], "mixer"),
        (["--model", "gfnet-xs", "--batch-size", "0"], "batch-size"),
        (["--model", "gfnet-xs", "--plot", "figure.svg"], "png"),
    ],
)
def test_bad_input_is_one_line_exit_2(run_cli, args, contains):
    assert_one_line_error(run_cli("profile", *args, "--repeats", "1"), 2, contains)


def test_plot_without_matplotlib_is_a_usage_error(run_cli, monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    result = run_cli("profile", "--plot", tmp_path / "f.png", "--repeats", "1")
    assert_one_line_error(result, 2, "pip install")


# --------------------------------------------------------------------------- GFLOPs
def test_gfnet_xs_gflops_and_growth_at_448():
    config = create_model("gfnet-xs").config.to_dict()
    spec = ModelSpec(name="gfnet-xs", mixer="gfnet", config=config)
    at_224, at_448 = spec.gflops(224), spec.gflops(448)
    assert 2.8 <= at_224 <= 2.9
    assert 4.0 <= at_448 / at_224 <= 4.3
    vit = spec.with_mixer("vit")
    assert vit.gflops(448) / vit.gflops(224) > 4.4


def test_gflops_grow_log_linearly_for_gfnet_and_quadratically_for_baselines():
    config = GFNetConfig(patch_size=8, embed_dim=64, depth=2, img_size=64, num_classes=10)
    spec = tiny_spec(config)
    ratios = {}
    for mixer in ("gfnet", "vit", "resmlp"):
        each = spec if mixer == "gfnet" else spec.with_mixer(mixer)
        ratios[mixer] = each.gflops(256) / each.gflops(128)  # 256 -> 1024 tokens
    assert 4.0 <= ratios["gfnet"] <= 4.3
    assert ratios["vit"] > ratios["gfnet"] + 0.3
    assert ratios["resmlp"] > ratios["gfnet"] + 0.3


def test_counting_a_cpu_model_counts_the_plain_path():
    """The fused kernels are invisible to the counter: counting must force the plain path."""
    model = GFNetArchitecture(TINY).eval()
    assert model_gflops(model, (32, 32)) == pytest.approx(config_gflops(TINY), rel=1e-9)


# --------------------------------------------------------------------------- error rows
def test_row_over_the_memory_limit_is_reported_not_run():
    options = ProfileOptions(batch_size=1, repeats=1, warmup=0, memory_limit_mb=0.01)
    row = profile_row(tiny_spec(), 32, options, torch.device("cpu"))
    assert row.error == OUT_OF_MEMORY
    assert row.latency_ms is None and row.images_per_second is None
    assert row.peak_memory_mb is None
    assert row.to_dict()["error"] == OUT_OF_MEMORY and row.gflops > 0


def test_quadratic_baselines_run_out_of_memory_first(tmp_path):
    """At 4096 tokens a 40 MB budget holds the GFNet but not attention's or ResMLP's N x N."""
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=10)
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    config.save(folder)
    options = ProfileOptions(repeats=1, warmup=0, measure_memory=False, memory_limit_mb=40)
    rows = profile(str(folder), [512], ["vit", "resmlp"], options)
    by_model = {row.model: row for row in rows}
    assert by_model["tiny-model"].error is None and by_model["tiny-model"].latency_ms > 0
    for name in ("vit", "resmlp"):
        assert by_model[name].error == OUT_OF_MEMORY
        assert by_model[name].latency_ms is None


def test_allocation_failure_becomes_an_error_row(monkeypatch):
    import gfnet_cli.commands.profile as profiling

    def fail(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 TB")

    monkeypatch.setattr(profiling, "_measure", fail)
    row = profile_row(tiny_spec(), 32, ProfileOptions(), torch.device("cpu"))
    assert row.error == OUT_OF_MEMORY and row.latency_ms is None


# --------------------------------------------------------------------------- --compile
def test_compile_measures_peak_memory_on_the_compiled_model(monkeypatch):
    """The memory row of ``--compile`` is the compiled model's: the child process gets the
    request, compiles, and measures that runner (eager backend here: no C++ toolchain)."""
    import io
    import json
    import subprocess
    from contextlib import redirect_stdout

    import gfnet_cli.commands.profile as profiling

    compiled: list[torch.nn.Module] = []
    calls: list[str] = []

    def eager_compile(model):
        def counting_backend(graph, example_inputs):
            calls.append("graph")
            return graph.forward

        runner = torch.compile(model, backend=counting_backend)
        compiled.append(runner)
        return runner

    requests: list[dict] = []

    def run_child_here(command, **kwargs):
        requests.append(json.loads(command[-1]))
        out = io.StringIO()
        with redirect_stdout(out):
            profiling._child_main(command[-1])
        return subprocess.CompletedProcess(command, 0, out.getvalue(), "")

    monkeypatch.setattr(profiling, "_compiled", eager_compile)
    monkeypatch.setattr(profiling.subprocess, "run", run_child_here)
    torch._dynamo.reset()
    options = ProfileOptions(batch_size=2, repeats=1, warmup=1, compile=True)
    row = profile_row(tiny_spec(), 48, options, torch.device("cpu"))  # 48: not the native 32
    torch._dynamo.reset()
    assert [r["compile"] for r in requests] == [True]
    assert len(compiled) == 2  # the timed runner here, the measured one in the child
    assert calls == ["graph", "graph"]  # one graph each: no breaks at a non-native size
    assert row.error is None and row.peak_memory_mb is not None and row.compile_s is not None


# --------------------------------------------------------------------------- what is read
@pytest.fixture
def hub(monkeypatch):
    from tests.hub_server import FakeHub

    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("GFNET_HUB_ORG", "testorg")
    monkeypatch.setenv("GFNET_ZOO_MIRROR", f"{server.url}/mirror")
    yield server
    server.stop()


def test_profile_and_the_zoo_table_read_no_weights(hub, tmp_path):
    folder = save_model(GFNetArchitecture(TINY).eval(), tmp_path / "tiny")
    hub.add_repo("org/tiny", {path.name: path.read_bytes() for path in folder.iterdir()})
    options = ProfileOptions(repeats=1, warmup=0, measure_memory=False)
    calls = []
    rows = profile("org/tiny", [32, 64], ["vit"], options, progress=lambda *a: calls.append(a))
    assert [(row.model, row.resolution) for row in rows] == [
        ("tiny", 32), ("tiny", 64), ("vit", 32), ("vit", 64),
    ]  # fmt: skip
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {path for _, path in hub.requests} == {"/org/tiny/resolve/main/config.json"}
    before = len(hub.requests)
    table = model_table()
    assert [row.name for row in table][:2] == ["gfnet-ti", "gfnet-xs"]
    assert len(hub.requests) == before  # zoo architectures need nothing downloaded


# --------------------------------------------------------------------------- precision helpers
def test_resolve_device_and_autocast_context():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and resolve_device("auto").type == "mps":
        expected = "mps"
    assert resolve_device("auto").type == expected
    with pytest.raises(UsageError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA"):
            resolve_device("cuda")
    assert isinstance(autocast_context("cpu", "fp32"), contextlib.nullcontext)
    with autocast_context("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(UsageError):
        check_precision(torch.device("cpu"), "fp16")


def test_deterministic_algorithms_switch_on_then_restore(monkeypatch):
    from gfnet_cli.device import deterministic_algorithms

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # unset, restored after
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision,
              torch.backends.cudnn.conv.fp32_precision)  # fmt: skip
    with deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()  # strict
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"  # no TF32
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        torch.fft.irfft2(torch.fft.rfft2(torch.randn(2, 4, 4)))  # FFTs are allowed
    after = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision,
             torch.backends.cudnn.conv.fp32_precision)  # fmt: skip
    assert after == before
    with deterministic_algorithms(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_refuses_a_nondeterministic_cublas_workspace(monkeypatch):
    from gfnet_cli.device import deterministic_algorithms

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(UsageError, match="CUBLAS_WORKSPACE_CONFIG") as error:
        with deterministic_algorithms():
            pass
    assert error.value.param == "deterministic"
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("version", ["13.6.1", "12.7", "10.15.7"])
def test_mps_before_macos_14_is_refused_in_one_line(version):
    from gfnet_cli.device import check_mps_macos

    with pytest.raises(UsageError, match="macOS 14") as error:
        check_mps_macos(version)
    assert error.value.param == "device" and "\n" not in str(error.value)


@pytest.mark.parametrize("version", ["14.0", "15.3.1", "26.0", ""])
def test_mps_on_macos_14_or_later_or_elsewhere_passes(version):
    from gfnet_cli.device import check_mps_macos

    check_mps_macos(version)  # "": not macOS (mac_ver() is empty there)


def test_explicit_mps_on_an_old_macos_exits_2(run_cli, monkeypatch):
    import gfnet_cli.device as device

    monkeypatch.setattr(device, "_mps_available", lambda: True)
    monkeypatch.setattr(device.platform, "mac_ver", lambda: ("13.6", ("", "", ""), "arm64"))
    with pytest.raises(UsageError, match="macOS 14"):
        resolve_device("mps")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"  # auto passes an unusable MPS over
    result = run_cli("profile", "--model", "gfnet-ti", "--device", "mps")
    assert_one_line_error(result, 2, "macOS 14")


def test_bf16_is_refused_on_a_gpu_that_only_emulates_it(monkeypatch):
    """torch.cuda.is_bf16_supported() counts emulation (pre-Ampere GPUs); only native counts."""
    asked: list[bool] = []

    def emulating(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulating)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    with pytest.raises(UsageError, match="native bfloat16") as error:
        check_precision(torch.device("cuda", 0), "bf16")
    assert error.value.param == "precision" and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert check_precision(torch.device("cuda", 0), "bf16") == "bf16"


# --------------------------------------------------------------------------- the filter's form
def test_rows_name_the_filter_form_that_ran(tiny_folder):
    from gfnet_cli.models.layers import filter_form

    options = ProfileOptions(repeats=1, warmup=1, measure_memory=False)
    (auto,) = profile(str(tiny_folder), [32], options=options)
    assert auto.extra["filter_form"] in ("fft", "matmul")  # measured in the warm-up
    with filter_form("matmul"):
        (fixed, vit) = profile(str(tiny_folder), [32], ["vit"], options=options)
    assert fixed.to_dict()["filter_form"] == "matmul"
    assert "filter_form" not in vit.to_dict()  # no global filter to speak of


def test_profile_table_has_filter_and_roof_columns(run_cli, tiny_folder, monkeypatch):
    from gfnet_cli.cli._common import stdout

    monkeypatch.setattr(stdout, "width", 160)  # a wide terminal: no header is cut
    result = run_cli(
        "profile", "--model", tiny_folder, "--resolution", "32", "--repeats", "1", "--no-memory"
    )
    assert result.exit_code == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "┃ model" in line)
    assert "roof" in header and "filter" in header
    assert "fft" in result.stdout or "matmul" in result.stdout
    assert "roof: this machine's fp32 matmul runs at" in " ".join(result.stdout.split())


# --------------------------------------------------------------------------- the roof
def test_the_matmul_peak_is_timed_once_per_device_and_precision():
    from gfnet_cli.commands import profile as profiling

    profiling._PEAKS.clear()
    cpu = torch.device("cpu")
    small = profiling.matmul_peak_gflops(cpu, "fp32", size=128)  # an explicit size: not kept
    assert small > 0 and profiling._PEAKS == {("cpu", "fp32"): small}
    assert profiling.matmul_peak_gflops(cpu, "fp32") == small  # cached for the process
    profiling._PEAKS.clear()


def test_rows_report_their_share_of_the_matmul_peak(tiny_folder):
    options = ProfileOptions(repeats=1, warmup=1, measure_memory=False)
    (row,) = profile(str(tiny_folder), [32], options=options)
    extra = row.to_dict()
    achieved = 2 * row.gflops * row.images_per_second  # figures rounded to 0.1
    assert extra["gflop_per_s"] == pytest.approx(achieved, rel=1e-3, abs=0.06)
    assert extra["matmul_peak_gflop_per_s"] > 0
    share = 100 * achieved / extra["matmul_peak_gflop_per_s"]
    assert extra["roof_pct"] == pytest.approx(share, rel=1e-2, abs=0.06)
    (bare,) = profile(str(tiny_folder), [32], options=dataclasses.replace(options, roof=False))
    assert "roof_pct" not in bare.to_dict()
