"""Recipes: plain nested tables in TOML files, overridden from the command line with key=value.

A recipe names everything a run depends on (network, data, optimiser, schedule, augmentation,
epochs). ``load_recipe`` reads a shipped recipe by name or any TOML file by path, ``apply_overrides``
sets dotted keys (``optim.lr=0.02``), refusing keys the recipe does not have so that a typo
cannot silently do nothing. The resolved recipe is saved in the run folder.
"""

from __future__ import annotations

import copy
import sys
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE_PACKAGE = "alexnet.recipes"


def recipe_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(RECIPE_PACKAGE).iterdir()
        if p.name.endswith(".toml")
    )


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A shipped recipe by name (``fashion-mnist``) or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ValueError(f"recipe file {path} does not exist")
        text = path.read_text()
    else:
        names = recipe_names()
        if name_or_path not in names:
            raise ValueError(
                f"unknown recipe {name_or_path!r}; valid: {', '.join(names)} (or a path to a .toml file)"
            )
        text = resources.files(RECIPE_PACKAGE).joinpath(f"{name_or_path}.toml").read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {name_or_path}: invalid TOML: {exc}") from None


def parse_value(text: str) -> Any:
    """A TOML literal (``0.02``, ``true``, ``[1, 2]``, ``"x"``); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def split_assignment(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value, e.g. optim.lr=0.02")
    key, value = item.split("=", 1)
    return key.strip(), parse_value(value.strip())


def apply_overrides(recipe: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Return a copy of ``recipe`` with each ``a.b.c=value`` applied; unknown keys are errors."""
    out = copy.deepcopy(recipe)
    for item in items:
        key, value = split_assignment(item)
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:depth]) or "the recipe"
                valid = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
                raise ValueError(
                    f"unknown recipe key {key!r}: {where} has no {part!r}; valid: {valid}"
                )
            if depth == len(parts) - 1:
                old = node[part]
                if (
                    isinstance(old, float)
                    and isinstance(value, int)
                    and not isinstance(value, bool)
                ):
                    value = float(value)
                elif (
                    old is not None
                    and type(value) is not type(old)
                    and not (isinstance(old, dict) or old == "")
                ):
                    raise ValueError(
                        f"recipe key {key!r} expects {type(old).__name__}, got {value!r}"
                    )
                node[part] = value
            else:
                node = node[part]
    return out


def to_toml(recipe: dict[str, Any]) -> str:
    """Write a recipe back as TOML (tables of scalars and lists, which is all recipes hold)."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines: list[str] = []

    def table(prefix: str, node: dict[str, Any]) -> None:
        plain = {k: v for k, v in node.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in node.items() if isinstance(v, dict)}
        if prefix and plain:
            lines.append(f"[{prefix}]")
        for k, v in plain.items():
            lines.append(f"{k} = {scalar(v)}")
        if plain:
            lines.append("")
        for k, v in nested.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", recipe)
    return "\n".join(lines)
