"""Compose files for `shoal stack deploy`: load, interpolate, validate, merge, convert."""
from .convert import IMAGE_LABEL, NAMESPACE_LABEL, StackPlan
from .errors import ComposeError
from .stack import load_stack

__all__ = ["ComposeError", "StackPlan", "load_stack", "NAMESPACE_LABEL", "IMAGE_LABEL"]
