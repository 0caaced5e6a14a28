"""robustops: fast kernels and drop-in PyTorch modules for training and evaluating
robust neural networks.

Usage::

    import robustops
    y = robustops.ops.mrelu(x)              # ops: compiled kernels with autograd
    act = robustops.nn.MReLU()              # modules
    net = robustops.models.lenet_saf("rbf") # the papers' networks
    robustops.extension_info()              # what was compiled
    robustops.attacks, .metrics, .curves, .defences, .data   # evaluation and defences
"""

from robustops._extension import FallbackWarning, extension_info
from robustops import ops, reference, nn, models, bang, bounds  # noqa: E402  (ops registers autograd/fake)
from robustops import attacks, curves, data, defences, metrics  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ops", "nn", "models", "reference", "bang", "bounds", "attacks", "curves", "data", "defences", "metrics",
           "extension_info", "FallbackWarning", "__version__"]
