"""Calibration and training data: sources (npy/npz, image folders, tars, CIFAR batches) and preprocessing.

Sources that :func:`load_dataset` reads:

* ``.npy`` -- an array of images only (memory-mapped), unlabelled;
* ``.npz`` -- images under ``x`` (labels under ``y``), or ``images``/``labels``, or ``data``/``labels``,
  or a single array of any name; without a labels array the data is unlabelled;
* an ImageFolder directory -- one sub-folder per class, classes sorted by name give the label index,
  image files ``.jpg``/``.jpeg``/``.png``/``.bmp``; a folder of images without class folders gives
  unlabelled data;
* a ``.tar``/``.tar.gz``/``.tgz`` (also bz2/xz) of such a folder, read in place (never extracted); the
  class folders are found below any top-level folder (``train/<class>/x.jpg``); a tar of one folder of
  images (``imgs/x.jpg``) is unlabelled;
* the CIFAR-10/100 "python version" batches: the ``cifar-10-batches-py`` directory, a single batch file
  (``data_batch_1`` ... ``test_batch``) or the ``cifar-10-python.tar.gz`` archive itself.

Images from folders and tars are decoded lazily, batch by batch; only the list of members is kept.
Arrays (npz, CIFAR) are small and loaded. Everything is preprocessed by a :class:`Preprocess`.

Modules: :mod:`.preprocess` (the config and transforms), :mod:`.images` (decode/resize one image),
:mod:`.sources` (one module per source and the registry), :mod:`.dataset` (the dataset, sampling,
:func:`load_dataset`), :mod:`.model_input` (checks against a model input, :func:`as_model_batch`,
:func:`load_feeds`), :mod:`.args` (the command-line argument group).

This package deliberately imports neither onnx, onnxruntime nor torch.
"""

from onnxprune.data.args import add_preprocess_arguments, preprocess_from_namespace
from onnxprune.data.dataset import Dataset, LazyImages, load_dataset
from onnxprune.data.images import IMAGE_EXTENSIONS
from onnxprune.data.model_input import as_model_batch, check_against_input, load_feeds
from onnxprune.data.preprocess import (NORM_PRESETS, Preprocess, parse_floats, parse_norm, parse_size,
                                       preprocess_from_args)
from onnxprune.data.sources import ArraySource, FolderSource, ImageSource, TarSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "NORM_PRESETS",
    "Preprocess",
    "Dataset",
    "LazyImages",
    "ImageSource",
    "ArraySource",
    "FolderSource",
    "TarSource",
    "load_dataset",
    "check_against_input",
    "as_model_batch",
    "load_feeds",
    "parse_size",
    "parse_floats",
    "parse_norm",
    "preprocess_from_args",
    "add_preprocess_arguments",
    "preprocess_from_namespace",
]
