"""Task placement, as a pure library: filters, spread strategy, placement preferences, reasons.

No I/O and no imports from `manager` or `api`: the manager adapts its objects to
the small input types defined in scheduler.types.
"""
from scheduler.constraints import Constraint, parse_constraint
from scheduler.filters import node_matches
from scheduler.preferences import Preference, parse_preference
from scheduler.scheduler import schedule
from scheduler.types import Decision, NodeInfo, PlacedTask, TaskRequest

__all__ = [
    "Constraint",
    "Decision",
    "NodeInfo",
    "PlacedTask",
    "Preference",
    "TaskRequest",
    "node_matches",
    "parse_constraint",
    "parse_preference",
    "schedule",
]
