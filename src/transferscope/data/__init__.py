"""Data: image sets with manifests, ImageNet class maps, preprocessing, downloads."""

from transferscope.data.folder import image_folder, resolve_folder, source_images
from transferscope.data.image_set import ImageSet, Sample
from transferscope.data.images import SkippedFile, load_rgb
from transferscope.data.imagenet import imagenet_names, imagenet_wnids, parse_wnid, wnid_to_index
from transferscope.data.tables import csv_set, from_dataset, imagenet_val_labels
from transferscope.data.transforms import (
    IMAGENET_NORM,
    LITE_NORM,
    Normalization,
    eval_transform,
    train_transform,
)

__all__ = [
    "IMAGENET_NORM", "LITE_NORM", "ImageSet", "Normalization", "Sample", "SkippedFile",
    "csv_set", "eval_transform", "from_dataset", "image_folder", "imagenet_names",
    "imagenet_val_labels", "imagenet_wnids", "load_rgb",
    "parse_wnid", "resolve_folder", "source_images", "train_transform", "wnid_to_index",
]
