"""Data sets for training and evaluation: CIFAR-10 (python batches, ImageFolder, tar), generic
ImageFolder, scikit-learn digits, synthetic images, and GLUE TSV tasks with an offline WordPiece
tokenizer. Everything is decoded once into arrays; batches are built and augmented on tensors."""

from __future__ import annotations

from netdiet.data.arrays import ImageArrays, channel_stats, split_train
from netdiet.data.augment import AugmentConfig, random_crop_flip, to_float_normalized
from netdiet.data.batch import Batch, Loader, shard_bounds
from netdiet.data.cifar10 import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from netdiet.data.datasets import DataBundle, DataSpec, build_data, dataset_names
from netdiet.data.digits import load_digits
from netdiet.data.errors import DataError
from netdiet.data.glue import GLUE_TASKS, GlueTask, TextExamples, glue_task, load_glue, read_glue_tsv
from netdiet.data.image_folder import ImageFolderConfig, load_image_folder
from netdiet.data.image_loader import ImageLoader
from netdiet.data.synthetic import synthetic_images
from netdiet.data.text_loader import TextLoader
from netdiet.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece

__all__ = [
    "AugmentConfig",
    "Batch",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataBundle",
    "DataError",
    "DataSpec",
    "GLUE_TASKS",
    "GlueTask",
    "ImageArrays",
    "ImageFolderConfig",
    "ImageLoader",
    "Loader",
    "TextExamples",
    "TextLoader",
    "build_data",
    "channel_stats",
    "dataset_names",
    "glue_task",
    "load_cifar10",
    "load_digits",
    "load_glue",
    "load_image_folder",
    "load_tokenizer",
    "random_crop_flip",
    "read_glue_tsv",
    "save_tokenizer",
    "shard_bounds",
    "split_train",
    "synthetic_images",
    "to_float_normalized",
    "train_wordpiece",
]
