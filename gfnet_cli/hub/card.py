"""Model cards (README.md) for MODEL folders, written with huggingface_hub's ModelCard.

One function, :func:`model_card`, serves every writer: ``convert`` passes where the weights
came from; ``finetune`` adds the base model, the dataset, its hyperparameters and evaluation
results. The metadata block (library, task, license, tags, datasets, base model, metrics and
a ``model-index`` with results) is what the Hub indexes; the body is what a user reads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gfnet_cli.errors import GFNetError
from gfnet_cli.hub.zoo_source import zoo_source
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.flops import config_gflops
from gfnet_cli.models.zoo import ZOO, is_zoo_name

logger = logging.getLogger(__name__)

LIBRARY_NAME = "gfnet-cli"
PAPER_URL = "https://arxiv.org/abs/2107.00645"
CODE_URL = "https://github.com/raoyongming/GFNet"
IMAGENET_DATASET = "imagenet-1k"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATASET_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[\w.-]+$")  # canonical ones have no org

CITATION = """@inproceedings{rao2021global,
  title={Global Filter Networks for Image Classification},
  author={Rao, Yongming and Zhao, Wenliang and Zhu, Zheng and Lu, Jiwen and Zhou, Jie},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2021}
}"""

_METRICS = (("top1", "accuracy", "Top-1 accuracy"), ("top5", "top_5_accuracy", "Top-5 accuracy"))


def model_card(
    config: GFNetConfig,
    *,
    source: str | None = None,
    source_sha256: str | None = None,
    used_ema: bool = False,
    num_params: int | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    eval_results: Mapping[str, Any] | None = None,
    license: str = "mit",
) -> str:
    """A README.md: Hub metadata plus what the model is, how to use it, how it was made.

    ``eval_results`` is ``{"top1", "top5", "loss", "dataset", "split"}`` (accuracies as
    fractions, as ``gfnet evaluate --json`` writes them). Converting one of the authors' zoo
    checkpoints fills in their published ImageNet-1k accuracy.
    """
    from huggingface_hub import ModelCard

    if config.is_segmentation:
        return segmentation_card(
            config, num_params=num_params, repo_id=repo_id, base_model=base_model,
            dataset=dataset, hyperparameters=hyperparameters, eval_results=eval_results,
            license=license,
        )  # fmt: skip
    name = config.architecture or "GFNet"
    title = repo_id.split("/")[-1] if repo_id else name
    published = _published_results(config, source) if eval_results is None else None
    results = eval_results or published
    result_dataset = results.get("dataset") if results else None
    datasets = _unique([_hub_id(dataset, _DATASET_ID), _hub_id(result_dataset, _DATASET_ID)])
    if published or (not datasets and config.num_classes == 1000 and not base_model):
        datasets = _unique(datasets + [IMAGENET_DATASET])
    base_model_id = _base_model_id(base_model)
    data = _card_data(
        title, config, license, datasets, base_model_id, results, published is not None
    )
    body = _body(
        title,
        config,
        source=source,
        source_sha256=source_sha256,
        used_ema=used_ema,
        num_params=num_params,
        reference=repo_id or _zoo_reference(config, source),
        base_model=base_model,
        dataset=dataset,
        hyperparameters=hyperparameters,
        results=results,
        published=published is not None,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return str(card)


# ---------------------------------------------------------------------------- metadata
def _card_data(
    title: str,
    config: GFNetConfig,
    license: str,
    datasets: list[str],
    base_model: str | None,
    results: Mapping[str, Any] | None,
    published: bool,
) -> Any:
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = []
    metrics = []
    if results:
        dataset_id = str(results.get("dataset") or (datasets[0] if datasets else "custom"))
        for key, metric_type, metric_name in _METRICS:
            value = results.get(key)
            if value is None:
                continue
            metrics.append(metric_type)
            eval_results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image Classification",
                    dataset_type=dataset_id,
                    dataset_name=dataset_id,
                    dataset_split=results.get("split"),
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(float(value), 4),
                    source_name="Rao et al. (NeurIPS 2021)" if published else None,
                    source_url=PAPER_URL if published else None,
                )
            )
    return ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag="image-classification",
        license=license,
        tags=["gfnet", "image-classification", "pytorch", "safetensors", "vision"],
        datasets=datasets or None,
        base_model=base_model,
        metrics=_unique(metrics) or None,
        model_name=title if eval_results else None,
        eval_results=eval_results or None,
    )


def _published_results(config: GFNetConfig, source: str | None) -> dict[str, Any] | None:
    """The authors' published accuracy, when these are their zoo weights at 224 px."""
    entry = ZOO.get(config.architecture or "")
    if entry is None or not source or config.num_classes != 1000:
        return None
    if config.image_size != (entry.img_size, entry.img_size):
        return None
    if not (source.startswith(entry.name) or entry.url in source):
        return None
    return {
        "top1": entry.top1 / 100,
        "top5": entry.top5 / 100,
        "dataset": IMAGENET_DATASET,
        "split": "validation",
    }


def _zoo_reference(config: GFNetConfig, source: str | None) -> str | None:
    if _published_results(config, source) is not None:
        return config.architecture
    return None


# ---------------------------------------------------------------------------- body
def _body(
    title: str,
    config: GFNetConfig,
    *,
    source: str | None,
    source_sha256: str | None,
    used_ema: bool,
    num_params: int | None,
    reference: str | None,
    base_model: str | None,
    dataset: str | None,
    hyperparameters: Mapping[str, Any] | None,
    results: Mapping[str, Any] | None,
    published: bool,
) -> str:
    height, width = config.image_size
    ref = reference or "path/to/model-or-org/name"
    kind = "hierarchical (4-stage pyramid)" if config.kind == "pyramid" else "isotropic (flat)"
    article = "A" if config.kind == "pyramid" else "An"
    lines = [
        f"# {title}",
        "",
        f"{article} {kind} **Global Filter Network** (GFNet, Rao et al., NeurIPS 2021) for image "
        "classification. GFNet replaces self-attention with a *global filter*: a 2D FFT of "
        "the token grid, an element-wise product with a learned complex filter, and an "
        "inverse FFT. Token mixing costs O(N log N), so the model scales to high "
        "resolutions; it accepts any input size its patching divides.",
        "",
        "## Model details",
        "",
        "- **Model type:** image classification / feature backbone",
        f"- **Architecture:** {config.describe()}",
    ]
    if num_params is not None:
        lines.append(f"- **Params (M):** {num_params / 1e6:.2f}")
    gflops = _gflops(config)
    if gflops is not None:
        lines.append(
            f"- **GFLOPs:** {gflops:.{2 if gflops >= 0.1 else 4}f} at {height}x{width} "
            "(multiply-accumulates, FFTs included)"
        )
    lines.append(f"- **Image size:** {height} x {width}")
    lines.append(f"- **Classes:** {config.num_classes}")
    if dataset or results:
        lines.append(f"- **Dataset:** {dataset or results.get('dataset')}")  # type: ignore[union-attr]
    if base_model:
        linked = _base_model_id(base_model)
        lines.append(
            f"- **Fine-tuned from:** [{linked}](https://huggingface.co/{linked})"
            if linked
            else f"- **Fine-tuned from:** `{base_model}`"
        )
    if source:
        lines.append(f"- **Weights:** converted from {source}" + (" (EMA)" if used_ema else ""))
        if source_sha256:
            lines.append(f"- **Source file sha256:** `{source_sha256}`")
    lines += [
        f"- **Paper:** [Global Filter Networks for Image Classification]({PAPER_URL})",
        f"- **Original code:** {CODE_URL}",
        "",
        "## How to use",
        "",
        "Command line ([gfnet-cli](https://pypi.org/project/gfnet-cli/)):",
        "",
        "```bash",
        "pip install gfnet-cli",
        f"gfnet predict cat.jpg --model {ref} --top-k 5",
        f"gfnet evaluate --model {ref} --dataset DATASET --split validation",
        f"gfnet finetune --model {ref} --dataset DATASET --output-dir my-gfnet",
        "```",
        "",
        "Python:",
        "",
        "```python",
        "import torch",
        "from gfnet_cli import GFNet, load_model",
        "",
        f'model = load_model("{ref}")  # eval mode; or GFNet.from_pretrained("{ref}")',
        "with torch.no_grad():",
        f"    logits = model(torch.randn(1, 3, {height}, {width}))",
        "top5 = logits.softmax(-1).topk(5)",
        "```",
        "",
        f"Preprocessing (the authors' evaluation transform): resize the shorter side to "
        f"{int(height / config.crop_pct)} px ({config.interpolation}), center-crop "
        f"{height} x {width}, scale to [0, 1], normalize with mean {_floats(config.mean)} "
        f"and std {_floats(config.std)}. `gfnet predict` does this for you. Other input "
        "sizes work too: `load_model(..., img_size=384)` resizes the filters and position "
        "embedding the way the authors' fine-tuning does.",
    ]
    if dataset or hyperparameters:
        lines += ["", "## Training", ""]
        if base_model:
            lines.append(
                f"Fine-tuned from `{base_model}`" + (f" on `{dataset}`." if dataset else ".")
            )
        elif dataset:
            lines.append(f"Trained on `{dataset}`.")
        if hyperparameters:
            lines += ["", "| hyperparameter | value |", "|---|---|"]
            lines += [f"| {key} | {_value(value)} |" for key, value in hyperparameters.items()]
    if results:
        lines += ["", "## Evaluation", ""]
        if published:
            lines.append("Published by the authors (ImageNet-1k validation, 224 px):")
            lines.append("")
        lines += ["| dataset | split | top-1 (%) | top-5 (%) | loss |", "|---|---|---|---|---|"]
        lines.append(
            f"| {results.get('dataset', '')} | {results.get('split', '') or ''} "
            f"| {_percent(results.get('top1'))} | {_percent(results.get('top5'))} "
            f"| {_value(results.get('loss')) if results.get('loss') is not None else ''} |"
        )
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def _gflops(config: GFNetConfig) -> float | None:
    try:
        return config_gflops(config)
    except Exception:  # a card without GFLOPs beats no card
        logger.debug("could not count GFLOPs for the card", exc_info=True)
        return None


def _percent(value: Any) -> str:
    return "" if value is None else f"{float(value) * 100:.2f}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _hub_id(reference: Any, pattern: re.Pattern[str]) -> str | None:
    """``reference`` as the Hub's metadata takes it (a repository id, revision dropped), or
    ``None`` for a local path: the Hub refuses a card whose ``base_model`` is not a model id,
    and a path on the trainer's disk means nothing to a reader."""
    if not reference:
        return None
    text = str(reference).strip()
    if Path(text).expanduser().exists():
        return None
    name = text.partition("@")[0]
    return name if pattern.match(name) else None


def _base_model_id(base_model: str | None) -> str | None:
    """The Hub model a fine-tuned model came from: a zoo name only when it was read from a
    Hub repository (``GFNET_HUB_ORG``); the authors' checkpoint is not on the Hub."""
    name, _, revision = (base_model or "").partition("@")
    if is_zoo_name(name):
        try:
            source = zoo_source(name, revision or None)
        except GFNetError:  # a card never fails over a reference it cannot place
            return None
        return source.location if source.kind == "hub" else None
    return _hub_id(base_model, _MODEL_ID)


def _unique(values: list[Any]) -> list[str]:
    out: list[str] = []
    for value in values:
        if value and str(value) not in out:
            out.append(str(value))
    return out


# ---------------------------------------------------------------------------- segmentation
_SEGMENTATION_METRICS = (
    ("mean_iou", "mean_iou", "Mean IoU"),
    ("mean_accuracy", "mean_accuracy", "Mean accuracy"),
    ("overall_accuracy", "overall_accuracy", "Overall accuracy"),
)


def segmentation_card(
    config: GFNetConfig,
    *,
    num_params: int | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    eval_results: Mapping[str, Any] | None = None,
    license: str = "mit",
) -> str:
    """A segmentation MODEL's README.md: ``pipeline_tag: image-segmentation``, a model-index
    with mIoU on the dataset when it is a Hub dataset id (a local path means nothing to a
    reader), the backbone it started from and the recipe.

    ``eval_results``: ``{"mean_iou", "mean_accuracy", "overall_accuracy", "dataset",
    "split"}`` (fractions, as ``gfnet evaluate --json`` gives them).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    title = repo_id.split("/")[-1] if repo_id else (config.architecture or "GFNet") + "-seg"
    results = dict(eval_results or {})
    dataset_id = _hub_id(results.get("dataset") or dataset, _DATASET_ID)
    evaluations = [
        EvalResult(
            task_type="image-segmentation", task_name="Semantic Segmentation",
            dataset_type=dataset_id, dataset_name=dataset_id,
            dataset_split=results.get("split"), metric_type=metric, metric_name=label,
            metric_value=round(float(results[key]), 4),
        )  # fmt: skip
        for key, metric, label in _SEGMENTATION_METRICS
        if dataset_id and results.get(key) is not None
    ]
    base_model_id = _base_model_id(base_model)
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag="image-segmentation",
        license=license,
        tags=["gfnet", "image-segmentation", "semantic-segmentation", "semantic-fpn",
              "pytorch", "safetensors", "vision"],  # fmt: skip
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model_id,
        metrics=[metric for _, metric, _ in _SEGMENTATION_METRICS] if evaluations else None,
        model_name=title if evaluations else None,
        eval_results=evaluations or None,
    )
    body = _segmentation_body(title, config, num_params, repo_id, base_model, dataset,
                              hyperparameters, results)  # fmt: skip
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _segmentation_body(
    title: str,
    config: GFNetConfig,
    num_params: int | None,
    repo_id: str | None,
    base_model: str | None,
    dataset: str | None,
    hyperparameters: Mapping[str, Any] | None,
    results: Mapping[str, Any],
) -> str:
    height, width = config.image_size
    ref = repo_id or "path/to/model-or-org/name"
    settings = config.segmentation
    backbone = config.replace(task="classification", segmentation=None).describe()
    lines = [
        f"# {title}",
        "",
        "A **Global Filter Network** (GFNet, Rao et al., NeurIPS 2021) backbone under a "
        "**Semantic FPN** head (Kirillov et al., 2019) for semantic segmentation: one class "
        "per pixel. The global filters mix tokens in O(N log N), which pays off at the high "
        "resolutions of dense prediction; the model takes any input size.",
        "",
        "## Model details",
        "",
        "- **Model type:** semantic segmentation (Semantic FPN, mmsegmentation's FPN + FPNHead)",
        f"- **Backbone:** {backbone}",
        f"- **Head:** FPN neck {settings.neck_channels} channels, FPN head "
        f"{settings.head_channels} channels, dropout {settings.dropout:g}",
    ]
    if num_params is not None:
        lines.append(f"- **Params (M):** {num_params / 1e6:.2f}")
    lines.append(f"- **Training crop:** {height} x {width}")
    lines.append(f"- **Classes:** {config.num_classes}" + (
        " (masks' 0 ignored, 1..N as 0..N-1: reduce_labels)" if settings.reduce_labels else ""))
    if dataset:
        lines.append(f"- **Dataset:** {dataset}")
    if base_model:
        linked = _base_model_id(base_model)
        lines.append(f"- **Backbone weights from:** [{linked}](https://huggingface.co/{linked})"
                     if linked else f"- **Backbone weights from:** `{base_model}`")  # fmt: skip
    lines += [
        f"- **Paper:** [Global Filter Networks for Image Classification]({PAPER_URL}), Table 2",
        f"- **Original code:** {CODE_URL} (classification; the segmentation code was not "
        "released, this head follows PVT's Semantic FPN configuration as the authors did)",
        "",
        "## How to use",
        "",
        "```bash",
        "pip install gfnet-cli",
        f"gfnet predict street.jpg --model {ref} --output-dir masks/ --overlay",
        f"gfnet evaluate --model {ref} --dataset DATASET --split validation",
        "```",
        "",
        "```python",
        "import torch",
        "from gfnet_cli import load_model",
        "",
        f'model = load_model("{ref}")  # eval mode',
        "with torch.no_grad():",
        f"    logits = model(torch.randn(1, 3, {height}, {width}))  # (1, classes, H, W)",
        "mask = logits.argmax(1)",
        "```",
        "",
        f"Preprocessing: resize the shorter side to {min(height, width)} px (aspect kept, "
        f"bilinear), scale to [0, 1], normalize with mean {_floats(config.mean)} and std "
        f"{_floats(config.std)}; resize the logits back to the image. `gfnet predict` does it.",
    ]
    if hyperparameters:
        lines += ["", "## Training", "", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| {key} | {_value(value)} |" for key, value in hyperparameters.items()]
    if results.get("mean_iou") is not None:
        lines += ["", "## Evaluation", "", "| dataset | split | mIoU (%) | mean accuracy (%) | "
                  "pixel accuracy (%) |", "|---|---|---|---|---|",
                  f"| {results.get('dataset') or dataset or ''} | {results.get('split') or ''} "
                  f"| {_percent(results.get('mean_iou'))} "
                  f"| {_percent(results.get('mean_accuracy'))} "
                  f"| {_percent(results.get('overall_accuracy'))} |"]  # fmt: skip
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)
