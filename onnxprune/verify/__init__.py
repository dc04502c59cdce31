"""Stage 6: the masked-original oracle that proves a rewrite."""
from onnxprune.verify.oracle import VerifyReport, compare, masked_model

__all__ = ["VerifyReport", "compare", "masked_model"]
