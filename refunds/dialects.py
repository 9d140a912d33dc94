"""Statements that differ by database (INSERT ... ON CONFLICT), built for a dialect when first used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Generic, TypeVar

__all__ = ["ByDialect"]

T = TypeVar("T")


class ByDialect(Generic[T]):
    """`build(dialect_module)` for each dialect name, e.g. `statements[conn.dialect.name]`.

    Built on first use, not at import: importing `sqlalchemy.dialects.postgresql` costs a process
    about 2 MB, which a service on SQLite would carry in every worker for nothing. Built once per
    dialect and kept (two threads may both build it the first time; either result is the same).
    """

    def __init__(self, build: Callable[[ModuleType], T]) -> None:
        self._build = build
        self._built: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        """The statement for dialect `name` ("sqlite", "postgresql"); raises KeyError for another."""
        built = self._built.get(name)
        if built is None:
            if name not in ("sqlite", "postgresql"):
                raise KeyError(name)
            built = self._built[name] = self._build(importlib.import_module(f"sqlalchemy.dialects.{name}"))
        return built
