"""The log drivers a task may ask for (TaskSpec.LogDriver) and what they mean on a node.

Every node keeps a task's stdout and stderr in Docker's json-file format, rotated by size. So
"json-file" (Docker's default) and "local" (Docker's compact on-disk driver; the same job here)
both mean those files, with the options max-size and max-file mapped to the rotation. "none"
keeps nothing. Drivers that ship logs elsewhere (syslog, journald, fluentd, ...) are refused
rather than silently turned into files. Pure: the manager validates with it and the worker
turns it into the runtime's settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from api.objects import Driver
from api.units import parse_bytes

FILE_DRIVERS = ("json-file", "local")
SUPPORTED = FILE_DRIVERS + ("none",)
OPTIONS = ("max-size", "max-file")
MIN_SIZE = 4096  # the runtime's minimum: below it a single long line would rotate every write
MAX_FILES = 100
UNLIMITED = 1 << 62  # max-size -1, as Docker: never rotate


@dataclass(frozen=True)
class LogSettings:
    keep: bool = True  # False: "none", output is discarded
    max_size: Optional[int] = None  # bytes; None: the node's default
    max_files: Optional[int] = None  # None: the node's default


def log_settings(driver: Optional[Driver]) -> LogSettings:
    """The settings a LogDriver asks for; ValueError naming the field ("Name", "Options.max-size").
    No name means the default driver, json-file (compose's `logging:` may give options only)."""
    if driver is None:
        return LogSettings()
    name = driver.name or "json-file"
    if name not in SUPPORTED:
        raise ValueError(f"Name: log driver {name!r} is not supported; use one of {', '.join(SUPPORTED)}")
    if name == "none":
        if driver.options:
            raise ValueError(f"Options.{min(driver.options)}: the none log driver takes no options")
        return LogSettings(keep=False)
    for key in sorted(driver.options):
        if key not in OPTIONS:
            raise ValueError(f"Options.{key}: not supported by the {name} log driver "
                             f"(supported: {', '.join(OPTIONS)})")
    max_size = None
    size_text = driver.options.get("max-size")
    if size_text is not None:
        if size_text.strip() == "-1":
            max_size = UNLIMITED
        else:
            max_size = parse_bytes(size_text, "Options.max-size")
            if max_size < MIN_SIZE:
                raise ValueError(f"Options.max-size: must be at least 4k (or -1 for no limit), got {size_text!r}")
    max_files = None
    files_text = driver.options.get("max-file")
    if files_text is not None:
        if not files_text.strip().isdigit() or not 1 <= int(files_text) <= MAX_FILES:
            raise ValueError(f"Options.max-file: must be a whole number from 1 to {MAX_FILES}, got {files_text!r}")
        max_files = int(files_text)
    return LogSettings(True, max_size, max_files)
