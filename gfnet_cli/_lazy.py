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

    Importing ``gfnet_cli.predict`` (the module) makes Python set the package attribute
    ``predict`` to that module, after which ``gfnet_cli.predict(...)`` would no longer be the
    function. The binding is redirected to the exported object of the same name.
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
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``exports`` map name -> module.

    Call it from the package's ``__init__`` with ``__name__`` and ``globals()``.
    """
    namespace["__lazy_exports__"] = exports
    sys.modules[package].__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:  # noqa: N807
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
