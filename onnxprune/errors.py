"""One base exception and a few subclasses; every message names the file, node or tensor."""


class OnnxPruneError(Exception):
    """Base class of every error onnxprune raises on purpose (the CLI prints it on one line)."""


class ModelLoadError(OnnxPruneError):
    """The model file is missing, truncated, not ONNX, or refers to data outside its folder."""


class AnalysisError(OnnxPruneError):
    """The graph cannot be analysed at all (e.g. shape inference failed)."""


class BudgetError(OnnxPruneError):
    """The requested budget cannot be reached, or is not a valid request."""


class PlanError(OnnxPruneError):
    """A plan does not fit the model it is applied to."""


class DataError(OnnxPruneError):
    """Calibration or evaluation data does not fit the model (shape, dtype, NaN, count)."""


class VerificationError(OnnxPruneError):
    """The pruned model does not match the masked original."""


class SolverError(OnnxPruneError):
    """A numerical solver failed and no fallback applies."""
