"""Pure-PyTorch references of every op: oracle of the tests, baseline of the
benchmarks, and the fallback when the compiled kernels are missing."""

from robustops.reference import bang, bounds, crown, interval, p4, saf, spp

__all__ = ["saf", "bang", "interval", "crown", "bounds", "p4", "spp"]
