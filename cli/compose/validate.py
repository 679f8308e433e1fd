"""A small typed-schema engine for compose trees.

Each type checks a value and returns it in one canonical form (lists for
string-or-list fields, mappings for list-or-dict fields, nanoseconds for durations,
bytes for sizes), so that merging and conversion see one shape per key. Errors name
the file, the line and the key path; keys that no type declares are errors.
"""
from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from . import units
from .errors import ComposeError, Pos, describe, render_path
from .nodes import YList, YMap

DROP = object()  # returned by types whose key must not reach the normalized tree


@dataclass
class Report:
    """What validation noticed without failing."""

    warnings: list[str] = field(default_factory=list)
    ignored: list[tuple[str | int, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class Ctx:
    pos: Pos
    parts: tuple[str | int, ...]
    report: Report

    @property
    def path(self) -> str:
        return render_path(self.parts)

    def at(self, part: str | int, pos: Pos) -> "Ctx":
        return Ctx(pos, self.parts + (part,), self.report)

    def fail(self, reason: str) -> ComposeError:
        return ComposeError(reason, self.pos, self.path)

    def expected(self, what: str, value: Any) -> ComposeError:
        return self.fail(f"must be {what}, got {describe(value)}")

    def warn(self, reason: str) -> None:
        self.report.warnings.append(f"{self.pos}: {self.path}: {reason}")


class Type:
    expect = "a value"
    # Whether an explicit null reaches check(); otherwise a null key counts as absent.
    accepts_none = False

    def check(self, value: Any, ctx: Ctx) -> Any:
        raise NotImplementedError


class Any_(Type):
    def check(self, value: Any, ctx: Ctx) -> Any:
        return value


class Str(Type):
    expect = "a string"

    def __init__(self, numbers: bool = False, nonempty: bool = False):
        self.numbers = numbers
        self.nonempty = nonempty

    def check(self, value: Any, ctx: Ctx) -> str:
        if self.numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ctx.expected(self.expect, value)
        if self.nonempty and not value:
            raise ctx.fail("must not be empty")
        return value


class Int(Type):
    expect = "an integer"
    _TEXT = re.compile(r"^[+-]?\d+$")

    def __init__(self, minimum: int | None = None, maximum: int | None = None):
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Any, ctx: Ctx) -> int:
        # Interpolated values arrive as text, so digits in a string count as an integer.
        if isinstance(value, str) and self._TEXT.match(value.strip()):
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool):
            raise ctx.expected(self.expect, value)
        if self.minimum is not None and value < self.minimum:
            raise ctx.fail(f"must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ctx.fail(f"must be at most {self.maximum}, got {value}")
        return value


class Float(Type):
    expect = "a number"

    def __init__(self, minimum: float | None = None, maximum: float | None = None):
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Any, ctx: Ctx) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ctx.expected(self.expect, value) from None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise ctx.expected(self.expect, value)
        value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise ctx.fail(f"must be at least {self.minimum:g}, got {value:g}")
        if self.maximum is not None and value > self.maximum:
            raise ctx.fail(f"must be at most {self.maximum:g}, got {value:g}")
        return value


class Bool(Type):
    expect = "true or false"
    _WORDS = {"y": True, "yes": True, "true": True, "on": True, "n": False, "no": False, "false": False, "off": False}

    def check(self, value: Any, ctx: Ctx) -> bool:
        if isinstance(value, str) and value.strip().lower() in self._WORDS:
            return self._WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ctx.expected(self.expect, value)
        return value


class Enum(Type):
    def __init__(self, *choices: str):
        self.choices = choices
        self.expect = "one of " + ", ".join(f'"{c}"' for c in choices)

    def check(self, value: Any, ctx: Ctx) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise ctx.expected(self.expect, value)
        return value


class Duration(Type):
    expect = 'a duration such as "10s" or "1m30s"'

    def check(self, value: Any, ctx: Ctx) -> int:
        if not isinstance(value, str):
            raise ctx.expected(self.expect, value)
        try:
            return units.parse_duration(value.strip())
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None


class Size(Type):
    expect = 'a size such as "64M" or a number of bytes'

    def check(self, value: Any, ctx: Ctx) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ctx.expected(self.expect, value)
        try:
            return units.parse_size(value)
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None


class Cpus(Type):
    expect = "a number of CPUs such as 0.5"

    def check(self, value: Any, ctx: Ctx) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ctx.expected(self.expect, value)
        try:
            return units.parse_cpus(value)
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None


class FileMode(Type):
    """Permission bits. YAML reads 0440 as octal already; text is read as octal too."""

    expect = 'a file mode such as 0440 or "0440"'

    def check(self, value: Any, ctx: Ctx) -> int:
        if isinstance(value, str):
            text = value.strip().lower().removeprefix("0o")
            if not re.fullmatch(r"[0-7]+", text):
                raise ctx.expected(self.expect, value)
            value = int(text, 8)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ctx.expected(self.expect, value)
        if not 0 <= value <= 0o7777:
            raise ctx.fail(f"must be between 0 and 07777, got {oct(value)}")
        return value


class Nullable(Type):
    """Lets an explicit null through as None (e.g. `command: null`)."""

    accepts_none = True

    def __init__(self, inner: Type):
        self.inner = inner
        self.expect = inner.expect

    def check(self, value: Any, ctx: Ctx) -> Any:
        return None if value is None else self.inner.check(value, ctx)


class Map(Type):
    """A mapping with known keys (fields) and optionally free keys checked by `other`."""

    expect = "a mapping"

    def __init__(
        self,
        fields: dict[str, Type] | None = None,
        other: Type | None = None,
        key_pattern: str | None = None,
        key_what: str = "key",
        required: Iterable[str] = (),
        extensions: bool = True,
        none_as_empty: bool = False,
    ):
        self.fields = fields or {}
        self.other = other
        self.key_pattern = re.compile(key_pattern) if key_pattern else None
        self.key_what = key_what
        self.required = tuple(required)
        self.extensions = extensions
        self.accepts_none = none_as_empty

    def check(self, value: Any, ctx: Ctx) -> YMap:
        if value is None and self.accepts_none:
            value = YMap(ctx.pos)
        if not isinstance(value, YMap):
            raise ctx.expected(self.expect, value)
        out = YMap(value.pos)
        for key, item in value.items():
            key_pos = value.pos_of(key)
            sub = ctx.at(key, key_pos)
            if self.extensions and key.startswith("x-") and key not in self.fields:
                continue
            kind = self.fields.get(key)
            if kind is None:
                if self.other is None:
                    raise sub.fail(self._unknown(key))
                if self.key_pattern is not None and not self.key_pattern.match(key):
                    raise sub.fail(f"invalid {self.key_what} name \"{key}\" (allowed: letters, digits, '.', '_', '-')")
                kind = self.other
            if item is None and not kind.accepts_none:
                continue
            result = kind.check(item, sub)
            if result is not DROP:
                out.put(key, result, key_pos)
        for key in self.required:
            if key not in out:
                raise ctx.fail(f'missing required key "{key}"')
        return out

    def _unknown(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.75)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        return f"unknown key{hint}"


class ListOf(Type):
    expect = "a list"

    def __init__(self, item: Type, unique: bool = False):
        self.item = item
        self.unique = unique

    def check(self, value: Any, ctx: Ctx) -> YList:
        if not isinstance(value, YList):
            raise ctx.expected(self.expect, value)
        out = YList(value.pos)
        for index, item in enumerate(value):
            item_ctx = ctx.at(index, value.pos_of(index))
            checked = self.item.check(item, item_ctx)
            if self.unique and checked in out:
                raise item_ctx.fail(f"duplicate entry {describe(checked)}")
            out.add(checked, item_ctx.pos)
        return out


class StrOrList(Type):
    """A string, or a list of strings; always returned as a list."""

    expect = "a string or a list of strings"

    def __init__(self, item: Type | None = None):
        self.item = item or Str()

    def check(self, value: Any, ctx: Ctx) -> YList:
        if isinstance(value, YList):
            return ListOf(self.item).check(value, ctx)
        if isinstance(value, YMap):
            raise ctx.expected(self.expect, value)
        return YList(ctx.pos, [(self.item.check(value, ctx), ctx.pos)])


def scalar_text(value: Any) -> str:
    """How a YAML scalar reads as text in a label or environment value (as docker's fmt.Sprint)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value)) if "e" not in repr(value) else repr(value)
    return str(value)


class ListOrDict(Type):
    """`KEY: value` mapping or `- KEY=value` list; returned as a mapping of strings.

    With allow_nil, a bare `KEY` (or `KEY:` with no value) is kept as None, meaning
    "take the value from the environment" for `environment`."""

    expect = "a mapping or a list of KEY=VALUE strings"

    def __init__(self, allow_nil: bool = False, sep: str = "="):
        self.allow_nil = allow_nil
        self.sep = sep

    def check(self, value: Any, ctx: Ctx) -> YMap:
        out = YMap(getattr(value, "pos", ctx.pos))
        if isinstance(value, YMap):
            for key, item in value.items():
                sub = ctx.at(key, value.pos_of(key))
                if item is None:
                    out.put(key, None if self.allow_nil else "", sub.pos)
                elif isinstance(item, (str, int, float, bool)):
                    out.put(key, scalar_text(item), sub.pos)
                else:
                    raise sub.expected("a string, number or boolean", item)
            return out
        if isinstance(value, YList):
            for index, item in enumerate(value):
                sub = ctx.at(index, value.pos_of(index))
                if not isinstance(item, str):
                    raise sub.expected(f"a KEY{self.sep}VALUE string", item)
                key, sep, text = item.partition(self.sep)
                if not key:
                    raise sub.fail(f"missing the name before \"{self.sep}\" in {describe(item)}")
                out.put(key, text if sep else (None if self.allow_nil else ""), sub.pos)
            return out
        raise ctx.expected(self.expect, value)


class Command(Type):
    """A command as a list (exec form) or a string split the way a POSIX shell would."""

    expect = "a string or a list of strings"
    accepts_none = True

    def check(self, value: Any, ctx: Ctx) -> YList | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                words = shlex.split(value)
            except ValueError as exc:
                raise ctx.fail(f"cannot split the command: {exc}") from None
            return YList(ctx.pos, ((w, ctx.pos) for w in words))
        if isinstance(value, YList):
            return ListOf(Str(numbers=True)).check(value, ctx)
        raise ctx.expected(self.expect, value)


class Custom(Type):
    def __init__(self, fn: Callable[[Any, Ctx], Any], expect: str = "a value", accepts_none: bool = False):
        self.fn = fn
        self.expect = expect
        self.accepts_none = accepts_none

    def check(self, value: Any, ctx: Ctx) -> Any:
        return self.fn(value, ctx)


class Ignored(Type):
    """A compose key that swarm mode does not use: reported once, then dropped."""

    accepts_none = True

    def check(self, value: Any, ctx: Ctx) -> Any:
        ctx.report.ignored.append(ctx.parts)
        return DROP


class Forbidden(Type):
    """A compose key that `docker stack deploy` refuses outright, with its advice."""

    accepts_none = True

    def __init__(self, advice: str):
        self.advice = advice

    def check(self, value: Any, ctx: Ctx) -> Any:
        raise ctx.fail(f"not supported by stack deploy: {self.advice}")
