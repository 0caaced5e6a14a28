"""Drop-in torch.nn modules of robustops."""

from robustops.nn.p4 import P4AvgPool2d, P4BatchNorm, P4ConvP4, P4ConvZ2, P4MaxPool2d, P4Pool, P4SpatialPyramidPool
from robustops.nn.saf import RBF, HybridLoss, MReLU
from robustops.nn.spp import SpatialPyramidPool

__all__ = ["MReLU", "RBF", "HybridLoss", "P4ConvZ2", "P4ConvP4", "P4Pool", "P4MaxPool2d", "P4AvgPool2d",
           "P4BatchNorm", "SpatialPyramidPool", "P4SpatialPyramidPool"]
