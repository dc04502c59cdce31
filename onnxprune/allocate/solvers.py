"""Geometric-program solvers for the convex allocation: cvxpy (``solve(gp=True)``, Clarabel with tight
tolerances when installed) and scipy SLSQP in log variables as the fallback.

Both take the binding budgets as (compiled cost, target) pairs, the weights ``w`` and the floors
``lo_x``, and return the keep-ratios and a line saying how they were found. cvxpy and scipy are
imported inside the functions.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from onnxprune.errors import SolverError

__all__ = ["gp_cvxpy", "gp_scipy"]


def gp_cvxpy(active, w: np.ndarray, lo_x: np.ndarray) -> tuple[np.ndarray, str]:
    import cvxpy as cp
    n = len(w)
    x = cp.Variable(n, pos=True)
    cons = [x >= lo_x, x <= 1]
    for cost, target in active:
        c = cost.coef / (target - cost.const)
        cons.append(cp.sum(cp.multiply(c, cp.gmatmul(cost.exponents(), x))) <= 1)
    prob = cp.Problem(cp.Maximize(cp.gmatmul(w[None, :], x)[0]), cons)
    # The objective is linear in log x and the budget's curvature can be small, so the ratios are
    # only as accurate as the square root of the duality gap: ask Clarabel for a tight one.
    opts = dict(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12,
                tol_ktratio=1e-10, max_iter=500) if "CLARABEL" in cp.installed_solvers() else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(gp=True, **opts)
    if prob.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        raise RuntimeError(f"status {prob.status}")
    val = np.asarray(x.value, dtype=float)
    if not np.isfinite(val).all():
        raise RuntimeError("non-finite solution")
    return np.clip(val, lo_x, 1.0), f"cvxpy {prob.solver_stats.solver_name} ({prob.status})"


def gp_scipy(active, w: np.ndarray, lo_x: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, str]:
    """Same problem in y = log x: minimise -w.y s.t. log(sum c exp(E y)) <= log(target - const)."""
    from scipy.optimize import minimize
    n = len(w)
    ws = w / n
    cons = []
    for cost, target in active:
        rhs = math.log(target - cost.const)

        def fun(y, cost=cost, rhs=rhs):
            return rhs - math.log(cost.value(np.exp(y)) - cost.const)

        def jac(y, cost=cost):
            x = np.exp(y)
            return -x * cost.grad(x) / (cost.value(x) - cost.const)
        cons.append({"type": "ineq", "fun": fun, "jac": jac})
    ylo = np.log(lo_x)
    res = minimize(lambda y: -float(ws @ y), np.clip(np.log(x0), ylo, 0.0), jac=lambda y: -ws,
                   method="SLSQP", bounds=list(zip(ylo, np.zeros(n))), constraints=cons,
                   options={"maxiter": 2000, "ftol": 1e-14})
    y = np.clip(res.x, ylo, 0.0)
    worst = min((c["fun"](y) for c in cons), default=0.0)
    if not np.isfinite(y).all() or worst < -1e-7 or res.status not in (0, 8):
        raise SolverError(f"scipy SLSQP (log variables) failed: {res.message} "
                          f"(worst log-budget violation {-worst:.3g})")
    how = "scipy SLSQP in log variables"
    if res.status == 8:
        how += " (stopped at its line-search precision limit, budgets met)"
    return np.exp(y), how
