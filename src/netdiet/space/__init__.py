"""Stage 2: the knobs over the graph's groups (keep-sets today; ranks and bit widths attach to layers)."""

from netdiet.space.groups import KINDS, ExcludedGroup, Group, Member
from netdiet.space.keep import Keep, kept_size, positions, validate_keep
from netdiet.space.space import LayerKnobSite, Space, analyze

__all__ = [
    "KINDS",
    "ExcludedGroup",
    "Group",
    "Keep",
    "LayerKnobSite",
    "Member",
    "Space",
    "analyze",
    "kept_size",
    "positions",
    "validate_keep",
]
