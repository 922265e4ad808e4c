"""Stage 5: make a keep-setting real (slim nn.Module, masked reference, equivalence check, save/load)."""

from netdiet.export.exporter import RECIPE_ATTR, export_model, mask_model, shrink
from netdiet.export.masked_norm import MaskedLastDimNorm
from netdiet.export.serialize import load, read_recipe, save
from netdiet.export.verify import verify

__all__ = [
    "RECIPE_ATTR",
    "MaskedLastDimNorm",
    "export_model",
    "load",
    "mask_model",
    "read_recipe",
    "save",
    "shrink",
    "verify",
]
