"""Stage 4: layer-wise keep-ratios under a MACs / params budget (uniform, global, convex GP, linear)."""
