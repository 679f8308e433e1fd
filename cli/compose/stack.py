"""load_stack: compose files in, StackPlan out. Reads only the files it is given, the
.env file beside the first one, and the env_file entries they name."""
from __future__ import annotations

import os
import re
from typing import Mapping

from .convert import StackPlan, convert_stack
from .envfile import parse_dotenv
from .errors import ComposeError, render_path
from .interpolate import interpolate_tree
from .loader import read_source
from .merge import merge_trees
from .nodes import plain
from .schema import ROOT
from .validate import Ctx, Report

# Swarm's rule for object names (a DNS label that may also hold "_"), at most 63 long.
_SWARM_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
_SWARM_NAME_MAX = 63


def load_stack(paths: list[str], stack: str, env: Mapping[str, str], stdin_text: str | None = None) -> StackPlan:
    """Load, interpolate, validate and merge the compose files in order, and convert
    them into the service specs and objects of stack `stack`. Raises ComposeError."""
    if not _SWARM_NAME.match(stack or ""):
        raise ComposeError(f'invalid stack name "{stack}": use letters, digits, "-" and "_", starting with a letter or digit', path="stack")
    if not paths:
        raise ComposeError("no compose file given", path="compose-file")
    if list(paths).count("-") > 1:
        raise ComposeError('standard input ("-") can be given only once', path="compose-file")

    sources = [read_source(path, stdin_text) for path in paths]
    workdir = sources[0].directory
    lookup = {**_read_dotenv(workdir), **env}

    report = Report()
    trees = []
    for source in sources:
        tree = interpolate_tree(source.tree, lookup, report.warnings)
        trees.append(ROOT.check(tree, Ctx(tree.pos, (), report)))
    merged = merge_trees(trees)
    _check_service_names(merged, stack)

    plan = convert_stack(merged, stack, workdir, lookup)
    plan.services = plain(plan.services)
    plan.networks = plain(plan.networks)
    plan.secrets = plain(plan.secrets)
    plan.configs = plain(plan.configs)
    plan.warnings = _summarize(report)
    return plan


def _read_dotenv(directory: str) -> dict[str, str]:
    path = os.path.join(directory, ".env")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(f"cannot read the file: {exc}", file=path) from None
    return parse_dotenv(text, path)


def _check_service_names(root, stack: str) -> None:
    services = root.get("services") or {}
    for name in services:
        full = f"{stack}_{name}"
        if not _SWARM_NAME.match(full) or len(full) > _SWARM_NAME_MAX:
            raise ComposeError(
                f'service name "{full}" is not valid in swarm: at most {_SWARM_NAME_MAX} letters, digits, "-" and "_"',
                services.pos_of(name), render_path(("services", name)),
            )


def _summarize(report: Report) -> list[str]:
    service_keys: list[str] = []
    top_keys: list[str] = []
    for parts in report.ignored:
        if len(parts) > 2 and parts[0] == "services":
            rel = render_path(tuple(p for p in parts[2:]))
            if rel not in service_keys:
                service_keys.append(rel)
        else:
            rel = render_path(parts)
            if rel not in top_keys:
                top_keys.append(rel)
    warnings = []
    if service_keys:
        warnings.append("Ignoring unsupported options: " + ", ".join(sorted(service_keys)))
    if top_keys:
        warnings.append("Ignoring unsupported top-level keys: " + ", ".join(sorted(top_keys)))
    for warning in report.warnings:
        if warning not in warnings:
            warnings.append(warning)
    return warnings
