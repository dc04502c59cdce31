"""The ``preprocessing`` argument group of the command line, and the :class:`Preprocess` it describes."""

from __future__ import annotations

import argparse

from onnxprune.data.preprocess import CHANNEL_ORDERS, DTYPES, LAYOUTS, NORM_PRESETS, Preprocess, preprocess_from_args

__all__ = ["add_preprocess_arguments", "preprocess_from_namespace"]


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--size --resize --crop --mean --std --norm --layout --channel-order --no-scale`` to a parser."""
    g = parser.add_argument_group("preprocessing")
    g.add_argument("--size", help="model input size, N or HxW (e.g. 32 or 224x224)")
    g.add_argument("--resize", help="resize the shorter side to N first (e.g. 256)")
    g.add_argument("--crop", help="center crop, N or HxW, after --resize (e.g. 224)")
    g.add_argument("--mean", help="per-channel mean in 0..1 units (e.g. 0.485,0.456,0.406) or a preset name")
    g.add_argument("--std", help="per-channel std in 0..1 units (e.g. 0.229,0.224,0.225) or a preset name")
    g.add_argument("--norm", help=f"mean/std preset: {', '.join(sorted(NORM_PRESETS))}")
    g.add_argument("--layout", choices=LAYOUTS, type=str.upper, help="model input layout (default NCHW)")
    g.add_argument("--channel-order", dest="channel_order", choices=CHANNEL_ORDERS, type=str.upper, help="default RGB")
    g.add_argument("--no-scale", dest="scale", action="store_const", const=False, default=None,
                   help="keep uint8 pixel values in 0..255 (no division by 255)")
    g.add_argument("--input-dtype", dest="dtype", choices=DTYPES, help="default float32")


def preprocess_from_namespace(ns: argparse.Namespace) -> Preprocess:
    """The :class:`Preprocess` described by arguments added with :func:`add_preprocess_arguments`."""
    keys = ("size", "resize", "crop", "mean", "std", "norm", "layout", "channel_order", "scale", "dtype")
    return preprocess_from_args(**{k: getattr(ns, k, None) for k in keys})
