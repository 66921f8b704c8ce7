"""Every exception class defined in bot/ and scrm/ derives from the one root, :class:`scrm.errors.LianyiError`.

Modules are found with :func:`pkgutil.walk_packages` and, for folders without ``__init__.py`` (namespace
packages, which the walk does not enter), by their files, so a new module anywhere is checked."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import bot
import scrm
from scrm.errors import LianyiError


def _modules(package: ModuleType) -> list[ModuleType]:
    names = {package.__name__}
    names.update(info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."))
    for root in package.__path__:
        base = Path(root).parent
        for file in Path(root).rglob("*.py"):
            parts = file.relative_to(base).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [importlib.import_module(name) for name in sorted(names)]


def _exception_classes() -> dict[str, type[BaseException]]:
    classes: dict[str, type[BaseException]] = {}
    for module in _modules(bot) + _modules(scrm):
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                classes[f"{module.__name__}.{name}"] = value
    return classes


def test_the_walk_finds_our_exceptions() -> None:
    found = _exception_classes()
    assert "scrm.errors.LianyiError" in found
    assert "bot.wecom.errors.FatalError" in found
    assert len(found) > 20


def test_every_exception_class_derives_from_lianyi_error() -> None:
    strays = sorted(name for name, cls in _exception_classes().items() if not issubclass(cls, LianyiError))
    assert strays == []
