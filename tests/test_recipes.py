"""finetune --recipe and --print-config: the authors' hyper-parameters, explicit flags winning,
the lr scaled for the global batch, bad input refused with one line."""

from __future__ import annotations

import pytest

from gfnet_cli.engine.train import RECIPES, TrainConfig, describe_run
from gfnet_cli.engine.train.optim import Schedule, lr_at
from gfnet_cli.errors import UsageError
from tests.conftest import assert_one_line_error

# The issue's table (the authors' main_gfnet.py, main_gfnet_transfer.py and README commands),
# written out again here so a change to RECIPES cannot silently change what is checked.
SHARED = {
    "warmup_epochs": 5.0, "warmup_lr": 1e-6, "clip_grad": 1.0, "label_smoothing": 0.1,
    "randaugment": "rand-m9-mstd0.5-inc1", "color_jitter": 0.4, "crop_scale": [0.08, 1.0],
    "hflip": 0.5, "interpolation": "bicubic", "mixup": 0.8, "cutmix": 1.0, "mix_prob": 1.0,
    "mix_switch_prob": 0.5, "reprob": 0.0, "optimizer": "adamw", "opt_eps": 1e-8,
    "lr_base_batch": 512, "augment": True, "decay_all": False, "ema": None, "accumulate": 1,
}  # fmt: skip
TABLE = {
    "imagenet": {"epochs": 300, "base_lr": 5e-4, "min_lr": 1e-5, "weight_decay": 0.05,
                 "batch_size": 128, "img_size": 224, "eval_mode": False},
    "finetune-384": {"epochs": 30, "base_lr": 5e-6, "min_lr": 5e-6, "weight_decay": 1e-8,
                     "batch_size": 64, "img_size": 384, "eval_mode": True, "drop_path": 0.0},
    "transfer": {"epochs": 1000, "base_lr": 1e-4, "min_lr": 1e-5, "weight_decay": 1e-4,
                 "batch_size": 64, "img_size": 224, "eval_mode": True, "drop_path": 0.0},
}  # fmt: skip
# The authors' per-variant drop-path rates for ImageNet from scratch.
IMAGENET_DROP_PATH = {"gfnet-ti": 0.0, "gfnet-xs": 0.0, "gfnet-s": 0.15, "gfnet-b": 0.25,
                      "gfnet-h-ti": 0.1, "gfnet-h-s": 0.2, "gfnet-h-b": 0.4}  # fmt: skip


def _print_config(run_cli, *args: str, model: str = "gfnet-xs") -> dict:
    result = run_cli("finetune", "--model", model, "--dataset", "/nonexistent/data",
                     "--output-dir", "/nonexistent/out", "--print-config", *args)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return result.json()


@pytest.mark.parametrize("recipe", sorted(TABLE))
def test_print_config_of_each_recipe_is_the_authors_table(run_cli, recipe):
    scratch = ["--from-scratch"] if recipe == "imagenet" else []
    # 8 processes of the authors' per-GPU batch: the authors' global batch
    document = _print_config(run_cli, "--recipe", recipe, *scratch, "--accumulate", "8")
    expected = {**SHARED, **TABLE[recipe], "accumulate": 8, "recipe": recipe}
    assert {key: document[key] for key in expected} == expected
    assert document["world_size"] == 1
    assert document["global_batch_size"] == TABLE[recipe]["batch_size"] * 8
    assert document["lr"] == pytest.approx(
        TABLE[recipe]["base_lr"] * TABLE[recipe]["batch_size"] * 8 / 512
    )
    assert document["opt_betas"] == [0.9, 0.999]


@pytest.mark.parametrize("model", sorted(IMAGENET_DROP_PATH))
def test_imagenet_recipe_takes_each_variants_drop_path(run_cli, model):
    document = _print_config(run_cli, "--recipe", "imagenet", "--from-scratch", model=model)
    assert document["drop_path"] == IMAGENET_DROP_PATH[model]
    assert document["eval_mode"] is False


def test_lr_scales_with_the_global_batch_processes_included(run_cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")  # what torchrun sets: no process group is needed
    document = _print_config(run_cli, "--recipe", "imagenet", "--from-scratch",
                             "--batch-size", "64", "--accumulate", "2")  # fmt: skip
    assert (document["world_size"], document["global_batch_size"]) == (4, 512)
    assert document["lr"] == pytest.approx(5e-4)  # 5e-4 x 512 / 512
    assert document["batch_size"] == 64 and document["accumulate"] == 2


def test_explicit_flags_win_over_the_recipe(run_cli):
    document = _print_config(run_cli, "--recipe", "transfer", "--epochs", "3", "--lr", "2e-4",
                             "--mixup", "0", "--no-augment", "--lr-base-batch", "0",
                             "--no-eval-mode", "--drop-path", "0.1")  # fmt: skip
    assert document["epochs"] == 3 and document["mixup"] == 0.0 and document["augment"] is False
    assert document["lr"] == 2e-4 and document["lr_base_batch"] is None  # not scaled
    assert document["eval_mode"] is False and document["drop_path"] == 0.1
    assert document["cutmix"] == 1.0 and document["weight_decay"] == 1e-4  # the rest: recipe's


def test_a_flag_given_at_its_default_value_still_wins(run_cli):
    # --epochs 10 is our default, yet given explicitly it must override the recipe's 1000
    document = _print_config(run_cli, "--recipe", "transfer", "--epochs", "10")
    assert document["epochs"] == 10


def test_without_a_recipe_our_defaults_stay(run_cli):
    document = _print_config(run_cli)
    assert document["recipe"] is None
    assert (document["lr"], document["epochs"], document["crop_scale"]) == (1e-4, 10, [0.6, 1.0])
    assert document["randaugment"] is None and document["mixup"] == 0.0
    assert document["global_batch_size"] == 32 and document["img_size"] == 224


def test_print_config_reads_no_data_and_writes_nothing(run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("finetune", "--model", "gfnet-ti", "--dataset", tmp_path / "missing",
                     "--output-dir", out, "--recipe", "transfer", "--print-config")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["dataset"] == str(tmp_path / "missing")
    assert not out.exists()


def test_library_takes_a_recipe_name_plus_overrides():
    config = TrainConfig.from_recipe("imagenet", model="gfnet-s", dataset="d", output_dir="o",
                                     from_scratch=True, batch_size=256)  # fmt: skip
    assert config.epochs == 300 and config.batch_size == 256 and config.recipe == "imagenet"
    assert config.scaled_lr(world_size=2) == pytest.approx(5e-4 * 512 / 512)
    described = describe_run(config, world_size=2)
    assert described["drop_path"] == 0.15 and described["global_batch_size"] == 512
    assert set(RECIPES) == {"imagenet", "finetune-384", "transfer", "ade20k"}
    plain = TrainConfig.from_recipe(None, model="m", dataset="d", output_dir="o")
    assert plain == TrainConfig(model="m", dataset="d", output_dir="o")


def test_schedule_warms_up_from_warmup_lr_to_the_scaled_peak():
    config = TrainConfig.from_recipe("transfer", model="m", dataset="d", output_dir="o",
                                     epochs=20, batch_size=64, accumulate=2)  # fmt: skip
    # 100 batches an epoch, 2 per step: 50 steps; 5 warmup epochs: 250 steps
    schedule = Schedule.plan(config, batches_per_epoch=100, world_size=2)
    assert (schedule.steps_per_epoch, schedule.total_steps, schedule.warmup_steps) == (50, 1000,
                                                                                        250)
    peak = 1e-4 * 64 * 2 * 2 / 512
    assert schedule.lr == pytest.approx(peak)
    assert schedule.lr_at(0) == pytest.approx(1e-6 + (peak - 1e-6) / 250)
    assert schedule.lr_at(249) == pytest.approx(peak)
    assert schedule.lr_at(1000) == pytest.approx(1e-5)
    assert lr_at(0, 1.0, 0.0, 4, 10) == pytest.approx(0.25)  # warmup_lr 0: as before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "resnet"], "imagenet, finetune-384, transfer"),
        (["--recipe", "finetune-384", "--from-scratch"], "drop --from-scratch"),
        (["--recipe", "transfer", "--from-scratch"], "drop --from-scratch"),
        (["--recipe", "imagenet"], "add --from-scratch"),
        (["--accumulate", "0"], "--accumulate must be at least 1"),
        (["--ema", "0"], "--ema must be a decay in (0, 1)"),
        (["--ema", "1"], "--ema must be a decay in (0, 1)"),
        (["--ema", "1.5"], "--ema must be a decay in (0, 1)"),
        (["--randaugment", "autoaug"], "rand-m<M>"),
        (["--randaugment", "rand-m9-z3"], "rand-m<M>"),
        (["--randaugment", "rand-mX"], "rand-m<M>"),
        (["--reprob", "1.5"], "--reprob must be in [0, 1]"),
        (["--color-jitter", "-0.1"], "--color-jitter must be >= 0"),
        (["--recipe", "transfer", "--drop-path", "0.2"], "--eval-mode"),
    ],
)
def test_bad_recipe_input_exits_2_with_one_line(run_cli, tmp_path, args, message):
    out = tmp_path / "out"
    for extra in ([], ["--print-config"]):  # refused before any data is read, either way
        result = run_cli("finetune", "--model", "gfnet-ti", "--dataset", tmp_path / "d",
                         "--output-dir", out, *args, *extra)  # fmt: skip
        assert_one_line_error(result, 2, message)
    assert not out.exists()


def test_recipe_errors_name_library_parameters():
    with pytest.raises(UsageError) as error:
        TrainConfig.from_recipe("nope", model="m", dataset="d", output_dir="o")
    assert error.value.param == "recipe" and "imagenet, finetune-384, transfer" in str(error.value)


def test_the_clis_recipe_names_are_the_librarys():
    # the CLI module keeps a torch-free copy for its --help
    from gfnet_cli.cli.finetune_cmd import RECIPE_NAMES

    assert RECIPE_NAMES == tuple(RECIPES)


def test_deterministic_reaches_the_config_and_print_config(run_cli):
    assert _print_config(run_cli)["deterministic"] is False
    assert _print_config(run_cli, "--deterministic")["deterministic"] is True
    assert TrainConfig.from_recipe("transfer", model="m", dataset="d", output_dir="o",
                                   deterministic=True).deterministic  # fmt: skip
