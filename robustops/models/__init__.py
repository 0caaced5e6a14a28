"""A small model zoo: the networks of the papers robustops implements."""

from robustops.models.bang import cifar10_quick, lenet_caffe
from robustops.models.committee import committee_lenet
from robustops.models.p4 import (P4CNN, matched_width, p4cnn, parameter_count, standard_cnn, symmetric_cnn,
                                 wang_cnn)
from robustops.models.saf import SAFNet, cifar_saf, lenet_saf

__all__ = ["lenet_saf", "cifar_saf", "SAFNet", "lenet_caffe", "cifar10_quick", "committee_lenet", "standard_cnn",
           "symmetric_cnn", "p4cnn", "P4CNN", "wang_cnn", "parameter_count", "matched_width"]
