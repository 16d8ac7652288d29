"""Model cards (README.md) for MODEL folders."""

from __future__ import annotations

from gfnet_cli.models.config import GFNetConfig

CITATION = """@inproceedings{rao2021global,
  title={Global Filter Networks for Image Classification},
  author={Rao, Yongming and Zhao, Wenliang and Zhu, Zheng and Lu, Jiwen and Zhou, Jie},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2021}
}"""


def model_card(
    config: GFNetConfig,
    *,
    source: str | None = None,
    used_ema: bool = False,
    num_params: int | None = None,
) -> str:
    """A README.md describing the model, how to use it, and where it came from."""
    name = config.architecture or "GFNet"
    height, width = config.image_size
    lines = [
        "---",
        "library_name: gfnet-cli",
        "pipeline_tag: image-classification",
        "license: mit",
        "tags:",
        "- gfnet",
        "- image-classification",
        "---",
        "",
        f"# {name}",
        "",
        "A Global Filter Network (Rao et al., NeurIPS 2021): a vision transformer whose "
        "self-attention is replaced by a learned filter applied in the 2D Fourier domain.",
        "",
        f"- Architecture: {config.describe()}",
    ]
    if num_params is not None:
        lines.append(f"- Parameters: {num_params:,}")
    lines.append(f"- Input size: {height}x{width}")
    if source:
        lines.append(f"- Converted from: {source}" + (" (EMA weights)" if used_ema else ""))
    lines += [
        "",
        "## Usage",
        "",
        "```bash",
        "gfnet predict image.jpg --model PATH_OR_REPO",
        "```",
        "",
        "```python",
        "from gfnet_cli import load_model",
        'model = load_model("PATH_OR_REPO")',
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)
