"""Former home of the allocation stage, kept so that ``onnxprune.allocate.core`` imports still work;
import from :mod:`onnxprune.allocate` instead."""
from onnxprune.allocate import *  # noqa: F401,F403
from onnxprune.allocate import __all__  # noqa: F401
