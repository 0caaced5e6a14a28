"""Certified training with interval bounds (IBP) and the global, monotonically
decreasing robustness loss (Liang et al. 2023).

    bounded = robustops.bounds.BoundedModule(model)
    out = robustops.bounds.certified_loss(bounded, x, y, eps=0.3, n=4, weights="gm", kappa=0.5)
    out.loss.backward()
"""

from robustops.bounds.crown import crown_ibp_loss, crown_ibp_margins, relaxation
from robustops.bounds.ibp import BoundedModule, input_interval, interval_through, specification
from robustops.bounds.rules import BoundRule, bound_rule, register_bound_rule
from robustops.bounds.training import (CertifiedLoss, certified_loss, clean_error, linear_schedule,
                                       robust_cross_entropy, smoothed_schedule, subperturbation_weights,
                                       verified, verified_error)

__all__ = ["crown_ibp_margins", "crown_ibp_loss", "relaxation", "BoundedModule", "BoundRule", "bound_rule",
           "register_bound_rule", "input_interval",
           "interval_through", "specification", "CertifiedLoss", "certified_loss", "clean_error", "verified",
           "verified_error", "robust_cross_entropy", "subperturbation_weights", "linear_schedule",
           "smoothed_schedule"]
