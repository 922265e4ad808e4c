"""Quantizers: fake-quantization modules, their calibration, BN folding, and attaching them to a model.

Beside the pipeline (it imports nothing of it but `errors` and `graph.capture`): the export stage
makes the bits real from these modules' learned scales, and training paths (QAT fine-tuning) train
them. Quantizers are leaf modules hung on conv/linear layers (a weight parametrization and an input
pre-hook), so a model's groups and its analysis are the same with or without them.
"""

from netdiet.quant.attach import QuantizedLayer, attach_quantizers, quantized_layers, strip_quantizers
from netdiet.quant.calibrate import calibrate_activations
from netdiet.quant.fold import fold_batchnorm
from netdiet.quant.placement import output_quantizer_sites
from netdiet.quant.plan import QuantPlan, apply_plan
from netdiet.quant.prepare import prepare_quantized
from netdiet.quant.quantizers import LearnedBitQuantizer, LSQQuantizer, bits_of_range, qrange

__all__ = [
    "LSQQuantizer",
    "LearnedBitQuantizer",
    "QuantPlan",
    "QuantizedLayer",
    "apply_plan",
    "attach_quantizers",
    "bits_of_range",
    "calibrate_activations",
    "fold_batchnorm",
    "output_quantizer_sites",
    "prepare_quantized",
    "qrange",
    "quantized_layers",
    "strip_quantizers",
]
