"""Model cards (README.md) for MODEL folders, written with huggingface_hub's ModelCard.

One function, :func:`model_card`, serves every writer: ``convert`` passes where the weights
came from; ``finetune`` adds the base model, the dataset, its hyperparameters and evaluation
results. The metadata block (library, task, license, tags, datasets, base model, metrics and
a ``model-index`` with results) is what the Hub indexes; the body is what a user reads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gfnet_cli.errors import GFNetError
from gfnet_cli.hub.remote_code import supports_transformers
from gfnet_cli.hub.zoo_source import zoo_source
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.flops import config_gflops
from gfnet_cli.models.zoo import ZOO, is_zoo_name

logger = logging.getLogger(__name__)

LIBRARY_NAME = "gfnet-cli"
PAPER_URL = "https://arxiv.org/abs/2107.00645"
CODE_URL = "https://github.com/raoyongming/GFNet"
IMAGENET_DATASET = "imagenet-1k"
# What usage snippets name before the model has a repository; ``push`` writes the repo id.
PLACEHOLDER_REFERENCE = "path/to/model-or-org/name"
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
    eval_results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    license: str = "mit",
) -> str:
    """A README.md: Hub metadata plus what the model is, how to use it, how it was made.

    ``eval_results`` is one result or a list of them, each ``{"top1", "top5", "loss",
    "dataset", "split"}`` (accuracies as fractions, as ``gfnet evaluate --json`` writes them),
    optionally ``"chose_epoch": True`` for the split that chose a fine-tuned model's epoch.
    Converting one of the authors' zoo checkpoints fills in their published ImageNet-1k
    accuracy. Local paths never appear: a folder is named by its base name.
    """
    from huggingface_hub import ModelCard

    if config.is_segmentation:
        return segmentation_card(
            config, num_params=num_params, repo_id=repo_id, base_model=base_model,
            dataset=dataset, hyperparameters=hyperparameters, eval_results=eval_results,
            license=license,
        )  # fmt: skip
    published = _published_results(config, source) if eval_results is None else None
    given = eval_results or published
    rows = _result_rows(given, dataset) if given else []
    datasets = _unique([_hub_id(dataset, _DATASET_ID)]
                       + [row.get("hub_dataset") for row in rows])  # fmt: skip
    if published or (not datasets and config.num_classes == 1000 and not base_model):
        datasets = _unique(datasets + [IMAGENET_DATASET])
    base_model_id = _base_model_id(base_model)
    title = card_title(config, repo_id=repo_id, base_model=base_model, dataset=dataset,
                       source=source)  # fmt: skip
    data = _card_data(title, config, license, datasets, base_model_id, rows,
                      published is not None)  # fmt: skip
    results = rows[0] if rows else None
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
        rows=rows,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return str(card)


def card_title(config: GFNetConfig, *, repo_id: str | None = None,
               base_model: str | None = None, dataset: str | None = None,
               source: str | None = None) -> str:  # fmt: skip
    """What the card's heading calls the model: the repository's name when it has one, else
    what it is (``gfnet-ti fine-tuned on digits``), never a bare "GFNet"."""
    if repo_id:
        return repo_id.split("/")[-1]
    name = config.architecture or f"GFNet ({config.describe().rsplit(', ', 2)[0]})"
    if not dataset:
        if source and not config.architecture:
            return f"GFNet converted from {_display_name(source)}"
        return name
    if base_model:
        return f"{_display_name(base_model)} fine-tuned on {_display_name(dataset)}"
    return f"{name} trained on {_display_name(dataset)}"


def _display_name(reference: Any) -> str:
    """A model or dataset as a reader may see it: a Hub id as is, a local path by its name."""
    text = str(reference).strip()
    if _hub_id(text, _MODEL_ID) or _hub_id(text, _DATASET_ID):
        return text
    return Path(text).expanduser().resolve().name or text


def _result_rows(results: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                 dataset: str | None) -> list[dict[str, Any]]:  # fmt: skip
    """``eval_results`` as a list of rows, each with its dataset named (no local path)."""
    rows = [dict(results)] if isinstance(results, Mapping) else [dict(r) for r in results]
    for row in rows:
        reference = row.get("dataset") or dataset
        row["hub_dataset"] = _hub_id(reference, _DATASET_ID)
        row["dataset"] = _display_name(reference) if reference else None
    return rows


# ---------------------------------------------------------------------------- metadata
def _card_data(
    title: str,
    config: GFNetConfig,
    license: str,
    datasets: list[str],
    base_model: str | None,
    rows: list[dict[str, Any]],
    published: bool,
) -> Any:
    """The metadata block; ``model-index`` holds only results on a Hub dataset (the Hub
    links each to its dataset page: a local folder has none)."""
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = []
    metrics = []
    for results in rows:
        dataset_id = results.get("hub_dataset")
        if dataset_id is None:
            continue
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
                    dataset_split=_split_id(results.get("split")),
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


def _split_id(split: Any) -> str | None:
    """A split as the metadata takes it: ``DATASET [validation]`` -> ``validation``."""
    if not split:
        return None
    text = str(split)
    inside = re.search(r"\[(.+)\]$", text)
    return (inside.group(1) if inside else text).strip()


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
    rows: list[dict[str, Any]] | None = None,
) -> str:
    height, width = config.image_size
    ref = reference or PLACEHOLDER_REFERENCE
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
        lines.append(f"- **Dataset:** {_display_name(dataset or results.get('dataset'))}")  # type: ignore[union-attr]
    if base_model:
        linked = _base_model_id(base_model)
        lines.append(
            f"- **Fine-tuned from:** [{linked}](https://huggingface.co/{linked})"
            if linked
            else f"- **Fine-tuned from:** `{_display_name(base_model)}`"
        )
    if source:
        shown = source if "://" in source else _display_name(source)
        lines.append(f"- **Weights:** converted from {shown}" + (" (EMA)" if used_ema else ""))
        if source_sha256:
            lines.append(f"- **Source file sha256:** `{source_sha256}`")
    lines += [
        f"- **Paper:** [Global Filter Networks for Image Classification]({PAPER_URL})",
        f"- **Original code:** {CODE_URL}",
        "",
        *_classes_section(config),
        *_intended_use(dataset, base_model),
        "## How to use",
        "",
        install_line(),
        "",
        "```bash",
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
        f"top5 = logits.softmax(-1).topk({min(5, max(config.num_classes, 1))})",
        "```",
        "",
        *(transformers_usage(ref) if supports_transformers(config) else []),
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
                f"Fine-tuned from `{_display_name(base_model)}`"
                + (f" on `{_display_name(dataset)}`." if dataset else ".")
            )
        elif dataset:
            lines.append(f"Trained on `{_display_name(dataset)}`.")
        readable = readable_hyperparameters(hyperparameters or {})
        if readable:
            lines += ["", "| hyperparameter | value |", "|---|---|"]
            lines += [f"| {key} | {_value(value)} |" for key, value in readable.items()]
    lines += _evaluation_section(rows or ([dict(results)] if results else []), published)
    lines += _limitations()
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


# What both transformers snippets (classification, segmentation) open with.
_TRANSFORMERS_INTRO = (
    "transformers (gfnet-cli installed as above with its `transformers` extra: the code "
    "this repository names is gfnet-cli's own, hence `trust_remote_code=True`):",
    "",
    "```python",
    "from PIL import Image",
)


def transformers_usage(reference: str) -> list[str]:
    """The card's transformers snippet: the same repository through ``trust_remote_code``
    (docs/transformers.md); tests run it as written."""
    return [
        *_TRANSFORMERS_INTRO,
        "from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline",
        "",
        f'classifier = pipeline("image-classification", model="{reference}", '
        "trust_remote_code=True)",
        'print(classifier("cat.jpg"))  # the top-5 of `gfnet predict cat.jpg`',
        "",
        f'processor = AutoImageProcessor.from_pretrained("{reference}", trust_remote_code=True)',
        "model = AutoModelForImageClassification.from_pretrained(",
        f'    "{reference}", trust_remote_code=True',
        ")",
        'inputs = processor(Image.open("cat.jpg"), return_tensors="pt")',
        "logits = model(**inputs).logits",
        "```",
        "",
    ]


def segmentation_transformers_usage(reference: str) -> list[str]:
    """A segmentation card's transformers snippet (docs/transformers.md); tests run it."""
    return [
        *_TRANSFORMERS_INTRO,
        "from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline",
        "",
        f'segmenter = pipeline("image-segmentation", model="{reference}", trust_remote_code=True)',
        'print([segment["label"] for segment in segmenter("street.jpg")])  # a mask per class',
        "",
        f'processor = AutoImageProcessor.from_pretrained("{reference}", trust_remote_code=True)',
        "model = AutoModelForSemanticSegmentation.from_pretrained(",
        f'    "{reference}", trust_remote_code=True',
        ")",
        'image = Image.open("street.jpg").convert("RGB")',
        'outputs = model(**processor(image, return_tensors="pt"))  # logits at the input size',
        "mask = processor.post_process_semantic_segmentation(",
        "    outputs, target_sizes=[(image.height, image.width)]",
        ")[0]  # the class map of `gfnet predict street.jpg`",
        "```",
        "",
    ]


def install_line() -> str:
    """How to install gfnet-cli today: from its repository (it is not on a package index)."""
    url = repository_url()
    if url:
        return (f"Install [gfnet-cli]({url}) from its repository "
                f"(`pip install 'gfnet-cli @ git+{url}'`), then:")  # fmt: skip
    return "Install gfnet-cli from a clone of its repository (`pip install .` in the clone), then:"


def repository_url() -> str | None:
    """The ``Repository`` URL the installed package declares (``[project.urls]``), if any."""
    from importlib import metadata

    try:
        urls = metadata.metadata(LIBRARY_NAME).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("repository", "source", "homepage") and url.strip():
            return url.strip()
    return None


def _classes_section(config: GFNetConfig) -> list[str]:
    names = list(config.class_names or [])
    if not names:
        return []
    shown = ", ".join(f"`{name}`" for name in names)
    if len(names) <= 20:
        return ["## Classes", "", f"{len(names)} classes: {shown}.", ""]
    return ["## Classes", "", f"<details><summary>{len(names)} classes</summary>", "",
            shown, "", "</details>", ""]  # fmt: skip


def _intended_use(dataset: str | None, base_model: str | None) -> list[str]:
    trained = f"the classes of {_display_name(dataset)}" if dataset else "ImageNet-1k's classes"
    return [
        "## Intended use",
        "",
        f"Image classification into {trained}, and a feature backbone (pooled embeddings, "
        "multi-scale feature maps) for retrieval, linear probes or dense prediction.",
        "",
    ]


def _limitations() -> list[str]:
    return [
        "",
        "## Limitations",
        "",
        "The model knows only its classes: every image gets one of them, however unlike them "
        "it is. Its accuracy holds for images like its training data (resolution, framing, "
        "domain); measure it on your own data before relying on it "
        "(`gfnet evaluate`, `gfnet robustness`). It inherits the biases of its training set.",
    ]


def _evaluation_section(rows: list[dict[str, Any]], published: bool) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Evaluation", ""]
    if published:
        lines += ["Published by the authors (ImageNet-1k validation, 224 px):", ""]
    lines += ["| dataset | split | top-1 (%) | top-5 (%) | loss |", "|---|---|---|---|---|"]
    for row in rows:
        loss = row.get("loss")
        split = _split_id(row.get("split")) or ""
        if row.get("chose_epoch"):
            split += " (chose the epoch)"
        lines.append(
            f"| {row.get('dataset') or ''} | {split} | {_percent(row.get('top1'))} "
            f"| {_percent(row.get('top5'))} | {_value(loss) if loss is not None else ''} |"
        )
    chooser = next((r for r in rows if r.get("chose_epoch")), None)
    if chooser is not None and len(rows) > 1:
        lines += ["", f"The kept epoch was chosen on {_split_id(chooser.get('split'))}; the "
                  "other rows were measured once, on the kept weights."]  # fmt: skip
    return lines


# Settings that mean nothing while the switch before them is off.
_AUGMENTATION_KEYS = ("crop_scale", "hflip", "randaugment", "color_jitter", "reprob")
_MIXING_KEYS = ("mix_prob", "mix_switch_prob")
_OFF_AT_ZERO = ("mixup", "cutmix", "color_jitter", "reprob", "validation_split_percentage")
_LABELS = {
    "lr": "peak learning rate", "base_lr": "learning rate before batch scaling",
    "lr_base_batch": "lr scaled per global batch of", "min_lr": "final learning rate",
    "warmup_lr": "warmup start learning rate", "warmup_epochs": "warmup epochs",
    "weight_decay": "weight decay", "label_smoothing": "label smoothing",
    "drop_path": "drop path", "clip_grad": "gradient clipping (max norm)",
    "batch_size": "batch size per process", "global_batch_size": "global batch size",
    "crop_scale": "random-resized-crop area", "hflip": "horizontal flip probability",
    "color_jitter": "colour jitter", "reprob": "random erasing probability",
    "mix_prob": "mixing probability", "mix_switch_prob": "cutmix over mixup",
    "ema": "EMA decay", "img_size": "image size", "eval_mode": "trained in eval mode",
    "validation_split_percentage": "validation held out from train (%)",
    "decay_all": "decay norms and filters too", "grad_checkpointing": "gradient checkpointing",
}  # fmt: skip


def readable_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """A run's settings as a person reads them: no unset (None) or off (False, 0 for an
    optional part) values, no settings of switched-off augmentations, plain labels."""
    kept = dict(values)
    if kept.get("augment") is False:
        for key in _AUGMENTATION_KEYS:
            kept.pop(key, None)
        kept["augmentation"] = "none (the evaluation transform)"
    kept.pop("augment", None)
    if not kept.get("mixup") and not kept.get("cutmix"):
        for key in _MIXING_KEYS:
            kept.pop(key, None)
    if kept.get("base_lr") == kept.get("lr"):
        kept.pop("base_lr", None)
    readable = {}
    for key, value in kept.items():
        off = value is None or value is False or (key in _OFF_AT_ZERO and value == 0)
        if off or (key == "accumulate" and value == 1):
            continue
        label = _LABELS.get(key, key.replace("_", " "))
        readable[label] = "yes" if value is True else _readable_value(value)
    return readable


def _readable_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return "–".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


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
    eval_results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
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
    if isinstance(eval_results, Sequence):  # a training run's rows: the one that chose
        eval_results = next((row for row in eval_results if row.get("mean_iou") is not None),
                            None)  # fmt: skip
    results = dict(eval_results or {})
    split = str(results.get("split") or "")
    if split.endswith("]") and "[" in split:  # "DATASET [validation]", as training names it
        results["split"] = split.rsplit("[", 1)[-1][:-1]
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
        install_line(),
        "",
        "```bash",
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
        *(segmentation_transformers_usage(ref) if supports_transformers(config) else []),
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
