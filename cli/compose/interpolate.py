"""Variable substitution in compose values: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?msg},
${VAR?msg}, ${VAR:+alt}, ${VAR+alt} and $$ for a literal dollar. Defaults may nest."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .errors import ComposeError, render_path
from .nodes import YList, YMap

_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class TemplateError(ValueError):
    pass


def _is_name_start(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_name_char(ch: str) -> bool:
    return _is_name_start(ch) or ch.isdigit() and ch.isascii()


def substitute(text: str, env: Mapping[str, str], unset: Callable[[str], None]) -> str:
    """Expand one string. unset(name) is called for each plain reference to a missing variable."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            out.append(_braced(text[i + 2:end], env, unset))
            i = end + 1
        elif nxt and _is_name_start(nxt):
            j = i + 1
            while j < n and _is_name_char(text[j]):
                j += 1
            name = text[i + 1:j]
            out.append(_lookup(name, env, unset))
            i = j
        else:
            raise TemplateError(f'invalid interpolation in "{text}": a "$" must start $VAR or ${{VAR}}; write "$$" for a literal "$"')
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise TemplateError(f'invalid interpolation in "{text}": missing "}}"')


def _lookup(name: str, env: Mapping[str, str], unset: Callable[[str], None]) -> str:
    value = env.get(name)
    if value is None:
        unset(name)
        return ""
    return value


def _braced(body: str, env: Mapping[str, str], unset: Callable[[str], None]) -> str:
    j = 0
    while j < len(body) and (_is_name_char(body[j]) if j else _is_name_start(body[j])):
        j += 1
    name, rest = body[:j], body[j:]
    if not name:
        raise TemplateError(f'invalid interpolation "${{{body}}}": expected a variable name')
    if not rest:
        return _lookup(name, env, unset)
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise TemplateError(f'invalid interpolation "${{{body}}}": unexpected "{rest[0]}" after the variable name')
    word = rest[len(op):]
    value = env.get(name)
    present = value is not None
    usable = present and (value != "" or not op.startswith(":"))
    if op in (":-", "-"):
        return value if usable else substitute(word, env, unset)
    if op in (":?", "?"):
        if usable:
            return value
        message = substitute(word, env, unset) or ("must be set and not empty" if op == ":?" else "must be set")
        raise TemplateError(f"required variable {name} is missing a value: {message}")
    # :+ and + give the alternative only when the variable is there.
    return substitute(word, env, unset) if usable else ""


def interpolate_tree(tree: YMap, env: Mapping[str, str], warnings: list[str]) -> YMap:
    """Substitute variables in every string value of a parsed file (keys are left alone)."""

    def walk(value: Any, parts: tuple[str | int, ...], pos) -> Any:
        if isinstance(value, YMap):
            out = YMap(value.pos)
            for key, item in value.items():
                key_pos = value.pos_of(key)
                out.put(key, walk(item, parts + (key,), key_pos), key_pos)
            return out
        if isinstance(value, YList):
            out_list = YList(value.pos)
            for index, item in enumerate(value):
                item_pos = value.pos_of(index)
                out_list.add(walk(item, parts + (index,), item_pos), item_pos)
            return out_list
        if isinstance(value, str) and "$" in value:
            path = render_path(parts)

            def unset(name: str) -> None:
                warnings.append(f'{pos}: {path}: variable "{name}" is not set, substituting an empty string')

            try:
                return substitute(value, env, unset)
            except TemplateError as exc:
                raise ComposeError(str(exc), pos, path) from None
        return value

    return walk(tree, (), tree.pos)
