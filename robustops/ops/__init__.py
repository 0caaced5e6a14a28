"""The ops of robustops: compiled kernels with autograd, fake kernels for
torch.compile, and a pure-PyTorch fallback."""

from robustops.ops.saf import mrelu, rbf

__all__ = ["mrelu", "rbf"]
