"""Hardware targets EdgeFleet can build for: frozen profiles and the one registry that lists them.

Exceptions::

    TargetError            (a ValueError)
     └── UnknownTargetError
"""

from targets.errors import TargetError, UnknownTargetError
from targets.profile import Accelerator, Precision, Runtime, Target
from targets.registry import TARGETS, get_target, list_targets

__all__ = [
    "TARGETS",
    "Accelerator",
    "Precision",
    "Runtime",
    "Target",
    "TargetError",
    "UnknownTargetError",
    "get_target",
    "list_targets",
]
