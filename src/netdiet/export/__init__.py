"""Stage 5: make an assignment real (slice, factorise, quantise handlers; masked reference; save/load)."""

from netdiet.export.exporter import RECIPE_ATTR, export_model, mask_model, shrink
from netdiet.export.handlers import HANDLERS, Handler, export_assignment
from netdiet.export.masked_norm import MaskedLastDimNorm
from netdiet.export.serialize import load, read_recipe, save
from netdiet.export.verify import verify

__all__ = [
    "HANDLERS",
    "RECIPE_ATTR",
    "Handler",
    "MaskedLastDimNorm",
    "export_assignment",
    "export_model",
    "load",
    "mask_model",
    "read_recipe",
    "save",
    "shrink",
    "verify",
]
