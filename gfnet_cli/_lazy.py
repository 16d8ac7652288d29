"""Packages whose public names are imported on first use (PEP 562).

``gfnet --help`` and ``import gfnet_cli`` must not pay for torch: a package lists where each
public name is defined, and the name's module is imported the first time it is looked up.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package where a submodule never shadows the public name it shares.

    Importing ``gfnet_cli.analysis.filters`` (the module) makes Python set the package attribute
    ``filters`` to that module, after which ``gfnet_cli.analysis.filters(...)`` would no longer
    be the function. The binding is redirected to the exported object of the same name.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("__lazy_exports__", {})
        if (
            isinstance(value, types.ModuleType)
            and exports.get(name) == value.__name__
            and hasattr(value, name)
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(
    package: str, exports: dict[str, tuple[str, ...]], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``exports`` maps module -> its public names.

    The one list of a package's public names: ``__all__`` and the lookup table are derived
    from it. Call it from the package's ``__init__`` with ``__name__`` and ``globals()``.
    """
    where = {name: module for module, names in exports.items() for name in names}
    if len(where) != sum(len(names) for names in exports.values()):
        raise ValueError(f"{package}: a public name is exported by two modules")
    namespace["__lazy_exports__"] = where
    namespace["__all__"] = sorted(set(namespace.get("__all__", ())) | set(where))
    sys.modules[package].__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:  # noqa: N807
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
