"""Converts the object dataclasses to and from Docker-API-shaped JSON.

Python fields are snake_case; on the wire they carry the Docker Engine API's PascalCase names
(`node_id` <-> `NodeID`), so an adapter can serve the Docker API one-to-one. Decoding checks
every field's type and refuses unknown fields, naming the path of the offending field, because
the same decoder guards the control API, the replicated log and messages from peers.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any, TypeVar

T = TypeVar("T")

# Word parts Docker spells in capitals.
_ACRONYMS = {
    "id": "ID", "ids": "IDs", "ip": "IP", "ips": "IPs", "cpus": "CPUs", "os": "OS", "ca": "CA",
    "tls": "TLS", "url": "URL", "dns": "DNS", "vip": "VIP", "vips": "VIPs", "tty": "TTY",
    "uid": "UID", "gid": "GID", "pid": "PID", "cpu": "CPU", "ipam": "IPAM", "csr": "CSR", "vni": "VNI",
}


class DecodeError(ValueError):
    """Bad input: the message names the field path and the reason."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


def wire_name(field_name: str) -> str:
    """`node_id` -> `NodeID`; a trailing underscore (for Python keywords) is dropped."""
    parts = field_name.rstrip("_").split("_")
    return "".join(_ACRONYMS.get(p, p[:1].upper() + p[1:]) for p in parts)


@lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append((f.name, f.metadata.get("wire", wire_name(f.name)), hints[f.name]))
    return tuple(out)


def encode(obj: Any) -> Any:
    """Dataclass tree -> JSON-ready value. Fields that are not set (None, empty, or a zero
    value that is also the field's default) are left out, as the Docker API's omitempty does."""
    enc = _ENCODERS.get(type(obj))
    if enc is not None:
        return enc(obj)
    if dataclasses.is_dataclass(obj):
        return _dataclass_encoder(type(obj))(obj)
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    return obj


# Per-class encoders, built once: every Raft entry, snapshot and API answer goes through
# `encode`, and walking `dataclasses.fields` and the defaults for each object dominated it.
_ENCODERS: dict[type, Any] = {}
_MISSING = dataclasses.MISSING


def _dataclass_encoder(cls: type):
    table = tuple((name, wire, _default(cls, name)) for name, wire, _ in _fields(cls))

    def enc(obj: Any) -> dict:
        out = {}
        for name, wire, default in table:
            value = getattr(obj, name)
            t = type(value)
            # Fast paths for the common leaf types; everything else takes the general rule.
            if t is str:
                if value:
                    out[wire] = value
            elif t is int or t is float:
                if value != 0 or default != value:
                    out[wire] = value
            elif value is None:
                continue
            elif t is list:
                if value:
                    out[wire] = [v if type(v) is str else encode(v) for v in value]
            elif t is dict:
                if value:
                    out[wire] = {k: v if type(v) is str else encode(v) for k, v in value.items()}
            elif t is bool:
                if value is not False or default != value:
                    out[wire] = value
            else:
                if isinstance(value, (list, dict, str)) and not value:
                    continue
                if (value is False or (type(value) in (int, float) and value == 0)) and default == value:
                    continue
                out[wire] = encode(value)
        return out

    _ENCODERS[cls] = enc
    return enc


@lru_cache(maxsize=None)
def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _default(cls: type, name: str) -> Any:
    return _defaults(cls).get(name, dataclasses.MISSING)


def decode(cls: type[T], data: Any, path: str = "") -> T:
    """JSON value -> dataclass `cls`, checking types and refusing unknown fields."""
    return _decoder(cls)(data, path)


# Per-type decoders, built once and cached: the same checks and error messages as `_decode`
# (which stays the reference and the fallback), without looking the type apart again for
# every value. Every applied Raft entry is decoded on every manager, so this is hot.
_DECODERS: dict[Any, Any] = {}
_NONE = type(None)


def _decoder(tp: Any):
    dec = _DECODERS.get(tp)
    if dec is None:
        dec = _DECODERS[tp] = _build_decoder(tp)
    return dec


def _leaf_types(tp: Any) -> frozenset:
    """Types whose values `_decode(tp, v)` returns unchanged: the decoder may skip the call."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return frozenset({_NONE}) | (_leaf_types(args[0]) if len(args) == 1 else frozenset())
    return frozenset({tp}) if tp in (str, int, bool) else frozenset({float}) if tp is float else frozenset()


def _build_decoder(tp: Any):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        cell: list[dict[str, tuple[str, frozenset, Any]] | None] = [None]

        def dec_dataclass(data: Any, path: str) -> Any:
            table = cell[0]
            if table is None:  # built on first use (classes may refer to each other), then published whole
                table = {wire: (name, _leaf_types(ftype), _decoder(ftype)) for name, wire, ftype in _fields(tp)}
                cell[0] = table
            if not isinstance(data, dict):
                raise DecodeError(path, f"must be an object, got {_got(data)}")
            kwargs = {}
            for key, value in data.items():
                known = table.get(key)
                if known is None:
                    raise DecodeError(_join(path, key), "unknown field")
                name, leaves, sub = known
                kwargs[name] = value if type(value) in leaves else sub(value, _join(path, key))
            try:
                return tp(**kwargs)
            except TypeError as exc:  # a required field is missing
                raise DecodeError(path, str(exc)) from None
        return dec_dataclass
    if origin is list:
        (item,) = typing.get_args(tp)
        leaves, sub = _leaf_types(item), _decoder(item)

        def dec_list(data: Any, path: str) -> list:
            if not isinstance(data, list):
                raise DecodeError(path, f"must be a list, got {_got(data)}")
            return [v if type(v) in leaves else sub(v, f"{path}[{i}]") for i, v in enumerate(data)]
        return dec_list
    if origin is dict:
        _, vt = typing.get_args(tp)
        leaves, sub = _leaf_types(vt), _decoder(vt)

        def dec_dict(data: Any, path: str) -> dict:
            if not isinstance(data, dict):
                raise DecodeError(path, f"must be an object, got {_got(data)}")
            out = {}
            for k, v in data.items():
                if not isinstance(k, str):
                    raise DecodeError(path, "keys must be strings")
                out[k] = v if type(v) in leaves else sub(v, _join(path, k))
            return out
        return dec_dict
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            inner = _decoder(args[0])
            return lambda data, path: None if data is None else inner(data, path)
    return lambda data, path: _decode(tp, data, path)  # scalars, Any and the rest


def _type_label(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "an object"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(tp, str(tp))


def _got(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, str):
        return f'"{data}"' if len(data) <= 40 else "a string"
    if isinstance(data, (int, float)):
        return repr(data)
    if isinstance(data, list):
        return "a list"
    if isinstance(data, dict):
        return "an object"
    return type(data).__name__


def _decode(tp: Any, data: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        if len(args) == 1:
            return _decode(args[0], data, path)
        raise DecodeError(path, "unsupported union type")  # pragma: no cover - model bug
    if tp is Any:
        return data
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise DecodeError(path, f"must be an object, got {_got(data)}")
        known = {wire: (name, ftype) for name, wire, ftype in _fields(tp)}
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                raise DecodeError(_join(path, key), "unknown field")
            name, ftype = known[key]
            kwargs[name] = _decode(ftype, value, _join(path, key))
        try:
            return tp(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise DecodeError(path, str(exc)) from None
    if origin is list:
        if not isinstance(data, list):
            raise DecodeError(path, f"must be a list, got {_got(data)}")
        (item,) = typing.get_args(tp)
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise DecodeError(path, f"must be an object, got {_got(data)}")
        _, vt = typing.get_args(tp)
        out = {}
        for k, v in data.items():
            if not isinstance(k, str):
                raise DecodeError(path, "keys must be strings")
            out[k] = _decode(vt, v, _join(path, k))
        return out
    if tp is bool:
        if not isinstance(data, bool):
            raise DecodeError(path, f"must be a boolean, got {_got(data)}")
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise DecodeError(path, f"must be an integer, got {_got(data)}")
        return data
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise DecodeError(path, f"must be a number, got {_got(data)}")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise DecodeError(path, f"must be a string, got {_got(data)}")
        return data
    if tp is bytes:
        if not isinstance(data, (bytes, bytearray)):
            raise DecodeError(path, f"must be bytes, got {_got(data)}")
        return bytes(data)
    raise DecodeError(path, f"unsupported type {tp!r}")  # pragma: no cover - model bug


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
