"""The ops of robustops: compiled kernels with autograd, fake kernels for
torch.compile, and a pure-PyTorch fallback."""

from robustops.ops.bang import bang_eta, bang_scale, per_sample_norm
from robustops.ops.crown import crown_relax, crown_relu
from robustops.ops.interval import (interval_conv2d, interval_linear, interval_mrelu, interval_rbf,
                                    interval_relu)
from robustops.ops.p4 import p4_filter
from robustops.ops.saf import mrelu, rbf
from robustops.ops.spp import spatial_pyramid_pool

__all__ = ["mrelu", "rbf", "per_sample_norm", "bang_eta", "bang_scale", "interval_relu", "interval_mrelu",
           "interval_rbf", "interval_linear", "interval_conv2d", "crown_relax", "crown_relu", "p4_filter",
           "spatial_pyramid_pool"]
