"""A small model zoo: the networks of the papers robustops implements."""

from robustops.models.saf import SAFNet, cifar_saf, lenet_saf

__all__ = ["lenet_saf", "cifar_saf", "SAFNet"]
