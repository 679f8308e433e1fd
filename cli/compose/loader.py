"""Reads compose files into YMap/YList trees that keep the line of every key and item.

PyYAML's SafeLoader is subclassed rather than post-processed because only the
composer's nodes know their marks; once constructed, plain dicts forget them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .errors import ComposeError, Pos
from .nodes import YList, YMap

_MERGE_TAG = "tag:yaml.org,2002:merge"
STDIN_NAME = "<stdin>"


@dataclass(frozen=True)
class SourceFile:
    """One compose file as given on the command line, already parsed."""

    name: str       # as shown in messages: the path the user typed, or <stdin>
    directory: str  # absolute directory that relative paths in this file resolve against
    tree: YMap


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that builds YMap/YList and refuses what compose files must not contain."""

    def __init__(self, stream: str, filename: str):
        super().__init__(stream)
        self.filename = filename

    def pos(self, node: yaml.Node) -> Pos:
        return Pos(self.filename, node.start_mark.line + 1)


def _fail(loader: _LineLoader, node: yaml.Node, reason: str) -> ComposeError:
    return ComposeError(reason, loader.pos(node))


def _construct_map(loader: _LineLoader, node: MappingNode) -> YMap:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        if isinstance(key_node, ScalarNode):
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise _fail(loader, key_node, f'duplicate key "{key_node.value}" (first defined on line {seen[key_node.value]})')
            seen[key_node.value] = line
    # Resolves "<<: *anchor" into plain pairs placed before the explicit ones,
    # so explicit keys override merged ones as YAML intends.
    loader.flatten_mapping(node)
    result = YMap(loader.pos(node))
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise _fail(loader, key_node, f"mapping keys must be strings, got {key!r}")
        result.put(key, loader.construct_object(value_node, deep=True), loader.pos(key_node))
    return result


def _construct_seq(loader: _LineLoader, node: SequenceNode) -> YList:
    return YList(loader.pos(node), ((loader.construct_object(child, deep=True), loader.pos(child)) for child in node.value))


def _construct_int(loader: _LineLoader, node: ScalarNode):
    # YAML 1.1 reads 22:22 as the base-60 integer 1342; in a compose file it is always a port mapping.
    if ":" in node.value:
        return node.value
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _construct_float(loader: _LineLoader, node: ScalarNode):
    if ":" in node.value:
        return node.value
    return yaml.SafeLoader.construct_yaml_float(loader, node)


def _construct_timestamp(loader: _LineLoader, node: ScalarNode) -> str:
    # Compose has no date values; a tag such as 2024-01-01 must stay text.
    return node.value


def _construct_binary(loader: _LineLoader, node: ScalarNode):
    raise _fail(loader, node, "binary values are not supported in compose files")


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_LineLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_LineLoader.add_constructor("tag:yaml.org,2002:binary", _construct_binary)
_LineLoader.add_constructor("tag:yaml.org,2002:omap", _construct_seq)
_LineLoader.add_constructor("tag:yaml.org,2002:pairs", _construct_seq)
_LineLoader.add_constructor("tag:yaml.org,2002:set", _construct_map)


def parse_yaml(text: str, filename: str) -> YMap:
    """Parse one compose document; the top level must be a mapping."""
    loader = _LineLoader(text, filename)
    try:
        tree = loader.get_single_data()
    except ComposeError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "malformed YAML"
        raise ComposeError(f"invalid YAML: {problem}", Pos(filename, line)) from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"invalid YAML: {exc}", file=filename) from None
    finally:
        loader.dispose()
    if tree is None:
        raise ComposeError("the file is empty; a compose file is a mapping with a services key", Pos(filename, 1))
    if not isinstance(tree, YMap):
        raise ComposeError("the top level of a compose file must be a mapping", Pos(filename, 1))
    return tree


def read_source(path: str, stdin_text: str | None = None) -> SourceFile:
    """Read and parse one file; "-" means stdin_text, with the current directory as its base."""
    if path == "-":
        if stdin_text is None:
            raise ComposeError("no compose text was given on standard input", file=STDIN_NAME)
        return SourceFile(STDIN_NAME, os.getcwd(), parse_yaml(stdin_text, STDIN_NAME))
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ComposeError(f"cannot read the file: {exc.strerror or exc}", file=path) from None
    except UnicodeDecodeError:
        raise ComposeError("the file is not valid UTF-8", file=path) from None
    return SourceFile(path, os.path.dirname(os.path.abspath(path)), parse_yaml(text, path))
