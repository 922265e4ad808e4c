"""Model zoo: small, CPU-friendly reference networks for tests, demos and benchmarks.

`build(name, **overrides)` returns a fresh nn.Module whose dataclass config takes the overrides;
`example_inputs(name)` returns inputs torch.export can trace. Every model captures with
`torch.export.export(model, inputs, strict=False)`.
"""

from __future__ import annotations

from netdiet.zoo.bert import BertClassifier, BertConfig, build_bert
from netdiet.zoo.mobilenetv2 import MobileNetV2, MobileNetV2Config, build_mobilenetv2
from netdiet.zoo.registry import (
    InputKind,
    ZooEntry,
    build,
    config_of,
    entry,
    example_inputs,
    make_config,
    names,
    register,
)
from netdiet.zoo.resnet_cifar import ResNet20Config, ResNet56Config, ResNetCifar, build_resnet_cifar
from netdiet.zoo.vgg import VGG, VGGConfig, build_vgg
from netdiet.zoo.vit import ViT, ViTConfig, build_vit

register(ZooEntry("resnet20", ResNet20Config, build_resnet_cifar, "image", 10, "CIFAR ResNet-20"))
register(ZooEntry("resnet56", ResNet56Config, build_resnet_cifar, "image", 10, "CIFAR ResNet-56"))
register(ZooEntry("vgg", VGGConfig, build_vgg, "image", 10, "VGG-11-style CNN with BN, 32x32"))
register(ZooEntry("mobilenetv2", MobileNetV2Config, build_mobilenetv2, "image", 10, "CIFAR MobileNetV2"))
register(ZooEntry("vit", ViTConfig, build_vit, "image", 10, "small ViT, patch 4, 32x32"))
register(ZooEntry("bert", BertConfig, build_bert, "tokens", 2, "small BERT-style classifier"))

__all__ = [
    "BertClassifier",
    "BertConfig",
    "InputKind",
    "MobileNetV2",
    "MobileNetV2Config",
    "ResNet20Config",
    "ResNet56Config",
    "ResNetCifar",
    "VGG",
    "VGGConfig",
    "ViT",
    "ViTConfig",
    "ZooEntry",
    "build",
    "config_of",
    "entry",
    "example_inputs",
    "make_config",
    "names",
    "register",
]
