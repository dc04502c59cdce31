"""Stage 5: the plan record and its application to the model."""
from onnxprune.rewrite.plan import GroupPlan, Plan
from onnxprune.rewrite.apply import apply_plan

__all__ = ["GroupPlan", "Plan", "apply_plan"]
