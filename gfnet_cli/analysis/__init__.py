"""The paper's analyses beyond accuracy, for any MODEL: learned filters and robustness.

- :func:`filters` (``gfnet visualize``): the global filters in the frequency and the spatial
  domain, the paper's Figure 5.
- :func:`robustness` (``gfnet robustness``): clean, FGSM and PGD accuracy and the 15 common
  corruptions of ImageNet-C computed on the fly, the paper's Table 3.

The names below are imported on first use (PEP 562); code inside the package imports from
the defining modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gfnet_cli._lazy import lazy_exports

# the one list of public names: module -> the names it defines (``__all__`` is derived)
_EXPORTS = {
    "gfnet_cli.analysis.attacks": (
        "fgsm",
        "pgd",
    ),
    "gfnet_cli.analysis.corruptions": (
        "CORRUPTIONS",
        "corrupt",
    ),
    "gfnet_cli.analysis.filters": (
        "FilterResult",
        "filters",
    ),
    "gfnet_cli.analysis.robustness": (
        "RobustnessResult",
        "robustness",
    ),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from gfnet_cli.analysis.attacks import fgsm, pgd
    from gfnet_cli.analysis.corruptions import CORRUPTIONS, corrupt
    from gfnet_cli.analysis.filters import FilterResult, filters
    from gfnet_cli.analysis.robustness import RobustnessResult, robustness
