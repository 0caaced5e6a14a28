"""Data for training and evaluating robust networks: loaders that download nothing.

Usage::

    from robustops.data import load_digits, load_mnist, load_cifar, rotated, toy, loader
    x, y = load_digits("train", size=28)            # embedded: 1797 8x8 digits, resized
    x, y = load_mnist("~/data/mnist", "test")       # IDX files, gzipped or not
    x, y = load_cifar("~/data", "cifar100", "test") # the python pickle batches
    xr, angles = rotated(x, mode="p4", seed=0)      # a rotated test set
    x, y = toy(n=512)                               # synthetic, for fast tests
    batches = loader(x, y, batch_size=64, seed=0)   # a seeded DataLoader

Images come as [N, C, H, W] floating-point tensors in [0, 1], labels as int64 [N].
"""

from robustops.data.cifar import load_cifar
from robustops.data.digits import load_digits
from robustops.data.mnist import load_mnist
from robustops.data.rotation import rotate, rotated
from robustops.data.synthetic import loader, toy

__all__ = ["load_digits", "load_mnist", "load_cifar", "rotate", "rotated", "toy", "loader"]
