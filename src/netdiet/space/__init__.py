"""Stage 2: the knobs of a model (keep per group, rank per factorisable weight, bits per layer)."""

from netdiet.space.assignment import ASSIGNMENT_FORMAT, Assignment
from netdiet.space.groups import KINDS, ExcludedGroup, Group, Member
from netdiet.space.keep import Keep, kept_size, positions, validate_keep
from netdiet.space.knobs import BIT_CHOICES, KNOB_KINDS, Knob, knob_id, split_id
from netdiet.space.space import LayerKnobSite, Space, analyze

__all__ = [
    "ASSIGNMENT_FORMAT",
    "BIT_CHOICES",
    "KINDS",
    "KNOB_KINDS",
    "Assignment",
    "Knob",
    "ExcludedGroup",
    "Group",
    "Keep",
    "LayerKnobSite",
    "Member",
    "Space",
    "analyze",
    "kept_size",
    "knob_id",
    "positions",
    "split_id",
    "validate_keep",
]
