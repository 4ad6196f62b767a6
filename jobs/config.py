"""Typed job configs: documented dataclasses loaded from YAML with key=value overrides.

    cfg = load_config(ClassifierJobConfig, "jobs/configs/classifier.yaml", ["train.epochs=2"])

Every key is checked against the dataclass fields before any work starts: an unknown
key, a value of the wrong type, or an impossible value (each dataclass's `validate()`)
raises ConfigError naming the file, the key path and, where known, the YAML line.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from jobs.errors import ConfigError


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None):
    """Load `cls` from a YAML file (or defaults when path is None) plus `a.b=value` overrides."""
    source = str(path) if path is not None else "<defaults>"
    data: dict = {}
    lines: dict[str, int] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: config file not found")
        text = p.read_text()
        try:
            node = yaml.compose(text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: top level must be a mapping of keys, got {type(data).__name__}")
        _collect_lines(node, "", lines)
    for item in overrides or []:
        _apply_override(data, item, source)
        # An overridden value no longer comes from the file's line: say so instead.
        lines[item.split("=", 1)[0].strip()] = 0
    return from_dict(cls, data, source=source, lines=lines)


def from_dict(cls: type, data: Any, source: str = "<dict>", lines: dict[str, int] | None = None):
    """Build and validate dataclass `cls` from plain data (used by the loader and the HTTP API)."""
    obj = _convert(cls, data, "", source, lines or {})
    _validate_tree(obj, "", source, lines or {})
    return obj


def to_dict(obj) -> dict:
    """Plain-data form of a config (what meta.json and config.yaml record)."""
    return dataclasses.asdict(obj)


def check(condition: bool, key: str, message: str) -> None:
    """Used inside `validate()`: raise a ConfigError for `key` (relative to the dataclass)."""
    if not condition:
        raise _FieldError(key, message)


class _FieldError(Exception):
    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def _where(source: str, key: str, lines: dict[str, int]) -> str:
    line = lines.get(key)
    if line == 0:
        return f"{source} (key=value override)"
    return f"{source}:{line}" if line else source


def _collect_lines(node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            key = f"{prefix}.{knode.value}" if prefix else str(knode.value)
            lines[key] = knode.start_mark.line + 1
            _collect_lines(vnode, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}[{i}]"
            lines[key] = item.start_mark.line + 1
            _collect_lines(item, key, lines)


def _apply_override(data: dict, item: str, source: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. train.epochs=3)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        # YAML 1.1 reads "1e-4" as a string; users mean a number.
        try:
            value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            pass
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp, value, key: str, source: str, lines: dict[str, int]):
    where = _where(source, key, lines)
    label = key or "<top level>"
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, source, lines)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: {label}: expected {_type_name(tp)}, got {value!r}", key=key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {label}: must be one of {list(choices)}, got {value!r}", key=key)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {label}: expected a mapping, got {type(value).__name__} {value!r}", key=key)
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        unknown = [k for k in value if k not in fields]
        if unknown:
            k = unknown[0]
            sub = f"{key}.{k}" if key else str(k)
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
            raise ConfigError(f"{_where(source, sub, lines)}: unknown key {sub!r}{hint}", key=sub)
        kwargs = {}
        for name, val in value.items():
            sub = f"{key}.{name}" if key else name
            kwargs[name] = _convert(hints[name], val, sub, source, lines)
        return tp(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {label}: expected a list, got {type(value).__name__} {value!r}", key=key)
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_convert(item_tp, v, f"{key}[{i}]", source, lines) for i, v in enumerate(value)]
    if tp is dict:
        tp, origin = dict[str, Any], dict
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {label}: expected a mapping, got {type(value).__name__} {value!r}", key=key)
        _, val_tp = typing.get_args(tp) or (Any, Any)
        return {str(k): _convert(val_tp, v, f"{key}.{k}", source, lines) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {label}: expected true/false, got {value!r}", key=key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {label}: expected an integer, got {value!r}", key=key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {label}: expected a number, got {value!r}", key=key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {label}: expected a string, got {value!r}", key=key)
        return value
    raise TypeError(f"config type {tp!r} at {label} is not supported by jobs.config")


def _validate_tree(obj, key: str, source: str, lines: dict[str, int]) -> None:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            sub = f"{key}.{f.name}" if key else f.name
            _validate_tree(getattr(obj, f.name), sub, source, lines)
        validate = getattr(obj, "validate", None)
        if validate is not None:
            try:
                validate()
            except _FieldError as e:
                sub = f"{key}.{e.key}" if key else e.key
                raise ConfigError(f"{_where(source, sub, lines)}: {sub}: {e.message}", key=sub) from None
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            _validate_tree(item, f"{key}[{i}]", source, lines)
    elif isinstance(obj, dict):
        for k, item in obj.items():
            _validate_tree(item, f"{key}.{k}", source, lines)
