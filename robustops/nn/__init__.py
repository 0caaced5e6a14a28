"""Drop-in torch.nn modules of robustops."""

from robustops.nn.saf import RBF, HybridLoss, MReLU

__all__ = ["MReLU", "RBF", "HybridLoss"]
