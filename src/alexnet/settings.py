"""Typed settings: dataclasses whose fields say which values they allow.

Recipes and network options are both plain nested tables on disk (TOML, checkpoints) and
dataclasses in the code. :func:`build` turns a table into a dataclass, checking every value
against its field's type and range, so a wrong value fails where it is read, in one line that
names its key, instead of deep inside training. Defaults live in the dataclasses alone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from alexnet.errors import UserError

T = TypeVar("T")
FLOAT32_MAX = 3.4028234663852886e38  # what the optimiser and kernels compute in


def setting(
    default: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A dataclass field with its allowed values: ``min``/``max`` inclusive, ``above``/``below``
    exclusive, ``choices`` a closed list. Bounds on a list apply to each item."""
    rules = {"min": min, "max": max, "above": above, "below": below, "choices": choices}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=rules)
    return dataclasses.field(default=default, metadata=rules)


class SettingError(UserError):
    """A value that its field does not allow; the message names the key."""


def _type_name(kind: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        return f"a list of {_type_name(item).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """``value`` as ``kind``, or a SettingError. Integers are numbers; bools are not integers."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _coerce(value, option, key)
            except SettingError:
                continue
    elif origin is list:
        (item,) = typing.get_args(kind)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, item, key) for v in value]
    elif origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise SettingError(
                    f"{key} must be an integer between -(2**63) and 2**63 - 1, got {value!r}"
                )
            return value
    elif isinstance(value, kind):
        return value
    raise SettingError(f"{key} must be {_type_name(kind)}, got {value!r}")


def _check_range(value: Any, rules: Mapping[str, Any], key: str) -> None:
    items = value if isinstance(value, list) else [value]
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        valid = ", ".join(_toml(c) for c in choices)
        raise SettingError(f"{key} must be one of {valid}; got {_toml(value)}")
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        checks = (
            ("min", lambda x, b: x >= b, ">="),
            ("max", lambda x, b: x <= b, "<="),
            ("above", lambda x, b: x > b, ">"),
            ("below", lambda x, b: x < b, "<"),
        )
        if isinstance(item, float) and not (math.isfinite(item) and abs(item) <= FLOAT32_MAX):
            raise SettingError(
                f"{key} must be a finite number within float32's range, got {value!r}"
            )
        for name, ok, sign in checks:
            bound = rules.get(name)
            if bound is not None and not ok(item, bound):
                raise SettingError(f"{key} must be {sign} {bound}, got {value!r}")


def _toml(value: Any) -> str:
    """A value as it is written in TOML and on the command line: "text", true, 3."""
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)


def build(cls: type[T], table: Mapping[str, Any], where: str = "") -> T:
    """``cls`` from ``table``: missing keys take their defaults, unknown keys and wrong values
    are SettingErrors naming the key (``where`` is the dotted prefix, e.g. ``data``)."""
    if not isinstance(table, Mapping):
        raise SettingError(f"{where or 'the settings'} must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise SettingError(f"unknown key {key!r}; valid: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        if name not in table:
            continue
        key = f"{where}.{name}" if where else name
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = build(kind, table[name], key)
            continue
        value = _coerce(table[name], kind, key)
        _check_range(value, field.metadata, key)
        values[name] = value
    return cls(**values)


def format_version(table: Mapping[str, Any], current: int, what: str, where: str) -> int:
    """The ``format`` number of a saved ``what`` (recipe, checkpoint); 1 where it has none,
    as alexnet 0.1.0 wrote them. One a newer alexnet wrote, or no whole number, is refused."""
    version = table.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{where}: format must be an integer >= 1, got {version!r}")
    if version > current:
        raise UserError(f"{where}: {what} format {version} is newer than this alexnet reads "
                         f"({current}); upgrade alexnet")  # fmt: skip
    return version


def to_table(obj: Any) -> dict[str, Any]:
    """A dataclass as nested plain dicts and lists (for TOML and checkpoints)."""
    return dataclasses.asdict(obj)
