"""Datasets: the registry, the real datasets of the protocol, the embedded mini world, few-shot splits."""

from .base import DEFAULT_TEMPLATES, ImageFiles, LabeledImages, TensorImages, UnreadableImageError
from .registry import DatasetSpec, dataset_names, fingerprint, get_spec, load_dataset, register

# Importing these modules registers their datasets (when they exist yet).
from importlib import import_module as _import_module

for _mod in ("real", "miniworld", "folder"):
    try:
        _import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _exc:  # a module not written yet; any other import error is real
        if _exc.name != f"{__name__}.{_mod}":
            raise

__all__ = [
    "DEFAULT_TEMPLATES", "DatasetSpec", "ImageFiles", "LabeledImages", "TensorImages",
    "UnreadableImageError", "dataset_names", "fingerprint", "get_spec", "load_dataset", "register",
]
