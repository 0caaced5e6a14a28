"""Symmetry enforcement (Wang et al., after Cohen & Welling 2016 and He et al. 2015):
p4 group convolutions, rotation pooling, p4 batch norm and the rotation-invariant
spatial pyramid pooling head (the plain SpatialPyramidPool is robustops.nn.spp's).

A p4 feature map is [B, C, 4, H, W]: one plane per rotation by r x 90 degrees. The
group acts on it by grot(y, k) = rot90(roll(y, k, dim=2), k, dims=(3, 4)), and the
layers here are equivariant:

    P4ConvZ2(rot90(x, k)) = grot(P4ConvZ2(x), k),   P4ConvP4(grot(y, k)) = grot(P4ConvP4(y), k)

exactly when the convolution's sampling grid maps onto itself under the rotation:
(H + 2 padding - dilation (k - 1) - 1) divisible by the stride (true for stride 1).
Otherwise the strided grid drops different rows and columns of the rotated input, and
equivariance holds only approximately (the tests show the failure).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops._checks import check_floating, check_int, check_levels
# SpatialPyramidPool lives in robustops.nn.spp (the spp family): re-exported here for
# compatibility, so that `from robustops.nn.p4 import SpatialPyramidPool` and models
# pickled under that path keep working. P4SpatialPyramidPool shares its level checks.
from robustops.nn.spp import SpatialPyramidPool
from robustops.ops import p4 as _p4
from robustops.ops import spp as _spp

__all__ = ["P4ConvZ2", "P4ConvP4", "P4Pool", "P4MaxPool2d", "P4AvgPool2d", "P4BatchNorm",
           "SpatialPyramidPool", "P4SpatialPyramidPool"]


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _square(name: str, cls: str, v, minimum: int) -> int:
    """An int >= minimum, or a pair of two equal ones: a TypeError for anything but
    ints, a ValueError for two different ones or a value below minimum."""
    if not _is_int(v):
        if not (isinstance(v, (tuple, list)) and all(_is_int(i) for i in v)):
            raise TypeError(f"{cls}: argument '{name}' must be an int or two equal ints, got "
                            f"{type(v).__name__} {v!r}")
        v = tuple(v)
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"{cls}: argument '{name}' must be an int or two equal ints (p4 needs square kernels "
                             f"and symmetric settings), got {v}")
        v = v[0]
    if v < minimum:
        raise ValueError(f"{cls}: argument '{name}' must be >= {minimum}, got {int(v)}")
    return int(v)


class _P4Conv(nn.Module):
    in_rotations: int = 4
    _cls = "P4ConvP4"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        in_channels = check_int(self._cls, "in_channels", in_channels, 1)
        out_channels = check_int(self._cls, "out_channels", out_channels, 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _square("kernel_size", self._cls, kernel_size, 1)
        self.stride = _square("stride", self._cls, stride, 1)
        self.padding = _square("padding", self._cls, padding, 0)
        self.dilation = _square("dilation", self._cls, dilation, 1)
        k, s = self.kernel_size, self.in_rotations
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, s, k, k, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._cache: Optional[Tuple[tuple, list]] = None  # not a buffer: the state_dict stays as it is
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the weight and bias in place, as nn.Conv2d does (Kaiming
        uniform weight; bias uniform in +-1/sqrt(fan_in)), with the fan-in of one output
        plane: ``in_channels * s * kernel_size^2`` (s = 1 for P4ConvZ2, 4 for P4ConvP4)."""
        # as nn.Conv2d, with the fan-in of one output plane: C_in * s * k * k
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.in_rotations * self.kernel_size ** 2
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        """The settings shown in the module's repr, as nn.Conv2d shows them."""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}")

    def clear_filter_cache(self) -> None:
        """Drop the cached transformed filter (see transformed_filter)."""
        self._cache = None

    def train(self, mode: bool = True):
        """Set train (``mode`` True) or eval mode, as nn.Module.train, and drop the
        cached transformed filter (see transformed_filter).

        Args:
            mode: True for train mode, False for eval mode.

        Returns:
            The module itself.
        """
        self._cache = None
        return super().train(mode)

    def transformed_filter(self) -> Tensor:
        """The expanded filter the layer convolves with: robustops.ops.p4_filter of the
        weight, one rotated copy of every filter per output rotation.

        In eval mode the transform is cached until the weight changes (in place, or
        replaced: the key is the weight's storage and version counter), and gradients
        still reach the weight. Changes made through ``weight.data`` bypass the version
        counter and so are not seen: call ``clear_filter_cache()`` (or ``eval()``
        again) after them.

        Returns:
            A tensor [C_out * 4, C_in * s, k, k] (s = 1 for P4ConvZ2, 4 for P4ConvP4)
            in the weight's dtype and on its device.
        """
        w = self.weight
        if self.training or torch.compiler.is_compiling():
            return _p4.p4_filter(w)
        key = (w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape))
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, [_p4.p4_filter(w)])
        cache = self._cache[1]
        if torch.is_grad_enabled() and w.requires_grad:
            return _p4.p4_filter_cached(w, cache)
        return cache[0]

    def _check(self, x: Tensor) -> None:
        check_floating(self._cls, "x", x)
        want = 4 if self.in_rotations == 1 else 5
        shape = "[B, C, H, W]" if want == 4 else "[B, C, 4, H, W]"
        if x.dim() != want or (want == 5 and x.shape[2] != 4):
            raise ValueError(f"{self._cls}: the input must have shape {shape}, got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self._cls}: the input has {x.shape[1]} channels, expected in_channels="
                             f"{self.in_channels}")

    def forward(self, x: Tensor) -> Tensor:
        """The group convolution of ``x``.

        Args:
            x: [B, C_in, H, W] (P4ConvZ2) or a p4 feature map [B, C_in, 4, H, W]
                (P4ConvP4), floating point.

        Returns:
            The p4 feature map [B, C_out, 4, H', W'], with H' and W' as nn.Conv2d's,
            ``(H + 2 padding - dilation (kernel_size - 1) - 1) // stride + 1``.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` does not have the shape above or has not ``in_channels``
                channels.
        """
        self._check(x)
        b = x.shape[0]
        flat = x.reshape(b, self.in_channels * self.in_rotations, x.shape[-2], x.shape[-1])
        bias4 = self.bias.repeat_interleave(4) if self.bias is not None else None
        y = F.conv2d(flat, self.transformed_filter(), bias4, self.stride, self.padding, self.dilation)
        return y.view(b, self.out_channels, 4, y.shape[-2], y.shape[-1])


class P4ConvZ2(_P4Conv):
    """The lifting convolution Z2 -> p4: [B, C_in, H, W] -> [B, C_out, 4, H', W'].

    Its weight is [C_out, C_in, 1, k, k], with one bias per output channel (shared by
    its 4 rotations); the output plane r is the input convolved with the filters
    rotated by r x 90 degrees. Equivariant: ``P4ConvZ2(rot90(x, k)) = grot(P4ConvZ2(x),
    k)`` where the sampling grid maps onto itself (see the module docstring).

    Args:
        in_channels: input channels C_in (>= 1).
        out_channels: output channels C_out (>= 1).
        kernel_size: the side k of the square kernel: an int or two equal ints.
        stride: an int or two equal ints (default 1).
        padding: zero padding on each side: an int or two equal ints (default 0).
        dilation: an int or two equal ints (default 1).
        bias: whether the layer has a bias (default True).
        device, dtype: where and in which dtype the parameters are created (as for
            nn.Conv2d).

    Shape:
        input: [B, C_in, H, W], floating point; output: [B, C_out, 4, H', W'], H' and W' as
        nn.Conv2d's for the same settings.

    Raises:
        TypeError: a size or setting that is not an int or a pair of ints.
        ValueError: a pair of two different ints (the layer needs square kernels and
            symmetric settings), or a value below its minimum (1; padding 0).
    """

    in_rotations = 1
    _cls = "P4ConvZ2"


class P4ConvP4(_P4Conv):
    """The p4 group convolution p4 -> p4: [B, C_in, 4, H, W] -> [B, C_out, 4, H', W'].

    Its weight is [C_out, C_in, 4, k, k], with one bias per output channel (shared by
    its 4 rotations). Equivariant: ``P4ConvP4(grot(y, k)) = grot(P4ConvP4(y), k)``
    where the sampling grid maps onto itself (see the module docstring).

    Args:
        in_channels: input channels C_in (>= 1).
        out_channels: output channels C_out (>= 1).
        kernel_size: the side k of the square kernel: an int or two equal ints.
        stride: an int or two equal ints (default 1).
        padding: zero padding on each side: an int or two equal ints (default 0).
        dilation: an int or two equal ints (default 1).
        bias: whether the layer has a bias (default True).
        device, dtype: where and in which dtype the parameters are created (as for
            nn.Conv2d).

    Shape:
        input: a p4 feature map [B, C_in, 4, H, W], floating point; output: [B, C_out, 4, H', W'], H' and W' as
        nn.Conv2d's for the same settings.

    Raises:
        TypeError: a size or setting that is not an int or a pair of ints.
        ValueError: a pair of two different ints (the layer needs square kernels and
            symmetric settings), or a value below its minimum (1; padding 0).
    """

    in_rotations = 4
    _cls = "P4ConvP4"


def _p4_input(cls: str, x: Tensor, name: str = "x") -> None:
    check_floating(cls, name, x)
    if x.dim() != 5 or x.shape[2] != 4:
        raise ValueError(f"{cls}: the input must be a p4 feature map [B, C, 4, H, W], got {tuple(x.shape)}")


class P4Pool(nn.Module):
    """Rotation pooling: max or mean over the 4 rotations, [B, C, 4, H, W] -> [B, C, H, W]
    (invariant to the rotation axis' shift, so the output rotates with the input).

    Args:
        mode: ``"max"`` (default) or ``"mean"``.

    Raises:
        ValueError: another ``mode``.
    """

    def __init__(self, mode: str = "max"):
        super().__init__()
        if mode not in ("max", "mean"):
            raise ValueError(f"P4Pool: argument 'mode' must be 'max' or 'mean', got {mode!r}")
        self.mode = mode

    def extra_repr(self) -> str:
        """The pooling mode, shown in the module's repr."""
        return f"mode={self.mode!r}"

    def forward(self, x: Tensor) -> Tensor:
        """Pool over the rotation axis.

        Args:
            x: a p4 feature map [B, C, 4, H, W], floating point.

        Returns:
            The max or mean over dimension 2, [B, C, H, W].

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not [B, C, 4, H, W].
        """
        _p4_input("P4Pool", x)
        return x.amax(2) if self.mode == "max" else x.mean(2)


class _P4SpatialPool(nn.Module):
    _pool = staticmethod(F.max_pool2d)
    _cls = "P4MaxPool2d"

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _square("kernel_size", self._cls, kernel_size, 1)
        self.stride = _square("stride", self._cls, stride if stride is not None else kernel_size, 1)
        self.padding = _square("padding", self._cls, padding, 0)
        if self.padding > self.kernel_size // 2:
            raise ValueError(f"{self._cls}: argument 'padding' must be at most half of 'kernel_size' "
                             f"({self.kernel_size // 2}), got {self.padding}")

    def extra_repr(self) -> str:
        """The pooling's settings, shown in the module's repr."""
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x: Tensor) -> Tensor:
        """Pool each of the 4 rotation planes of every channel spatially.

        Args:
            x: a p4 feature map [B, C, 4, H, W], floating point.

        Returns:
            [B, C, 4, H', W'], H' and W' as the 2-d pooling's.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not [B, C, 4, H, W].
        """
        _p4_input(self._cls, x)
        b, c = x.shape[:2]
        y = self._pool(x.reshape(b, c * 4, x.shape[3], x.shape[4]), self.kernel_size, self.stride, self.padding)
        return y.view(b, c, 4, y.shape[-2], y.shape[-1])


class P4MaxPool2d(_P4SpatialPool):
    """Spatial max pooling of each plane of a p4 feature map (keeps the rotation axis).

    Args:
        kernel_size: the side of the square window: an int or two equal ints.
        stride: an int or two equal ints; default (None): ``kernel_size``.
        padding: implicit padding on each side, at most half of ``kernel_size``: an
            int or two equal ints (default 0).

    Shape:
        input: a p4 feature map [B, C, 4, H, W], floating point; output: [B, C, 4, H',
        W'], H' and W' as nn.MaxPool2d's.

    Raises:
        TypeError: a setting that is not an int or a pair of ints.
        ValueError: a pair of two different ints, a value below its minimum, or a
            padding over half the kernel size.
    """


class P4AvgPool2d(_P4SpatialPool):
    """Spatial average pooling of each plane of a p4 feature map (keeps the rotation axis).

    Args:
        kernel_size: the side of the square window: an int or two equal ints.
        stride: an int or two equal ints; default (None): ``kernel_size``.
        padding: implicit padding on each side, at most half of ``kernel_size``: an
            int or two equal ints (default 0).

    Shape:
        input: a p4 feature map [B, C, 4, H, W], floating point; output: [B, C, 4, H',
        W'], H' and W' as nn.AvgPool2d's.

    Raises:
        TypeError: a setting that is not an int or a pair of ints.
        ValueError: a pair of two different ints, a value below its minimum, or a
            padding over half the kernel size.
    """

    _pool = staticmethod(F.avg_pool2d)
    _cls = "P4AvgPool2d"


class P4BatchNorm(nn.BatchNorm3d):
    """Batch norm of a p4 feature map [B, C, 4, H, W] with one mean, variance, weight
    and bias per channel, shared by its 4 rotations (and space), so it stays
    equivariant: nn.BatchNorm3d over (B, 4, H, W).

    Args:
        num_features: the channels C; the other arguments (eps, momentum, affine,
            track_running_stats, device, dtype) are nn.BatchNorm3d's.

    Shape:
        input: a p4 feature map [B, C, 4, H, W], floating point; output: the same shape.

    Raises:
        TypeError: the input is not a floating-point tensor (at the forward).
        ValueError: the input is not [B, num_features, 4, H, W] (at the forward).
    """

    def _check_input_dim(self, x: Tensor) -> None:
        _p4_input("P4BatchNorm", x, "input")  # the name of nn.BatchNorm3d.forward's argument
        if x.shape[1] != self.num_features:
            raise ValueError(f"P4BatchNorm: the input has {x.shape[1]} channels, expected num_features="
                             f"{self.num_features}")


def _orbits(n: int) -> Tensor:
    """The orbits of the n x n bins under rotations by 90 degrees, as [orbits, 4]
    indices of row-major bins (the centre bin of an odd n is its own orbit, repeated)."""
    seen, orbits = set(), []
    for i in range(n):
        for j in range(n):
            if (i, j) in seen:
                continue
            orbit, (a, b) = [], (i, j)
            for _ in range(4):
                orbit.append(a * n + b)
                seen.add((a, b))
                a, b = n - 1 - b, a
            orbits.append(orbit)
    return torch.tensor(orbits, dtype=torch.long)


class P4SpatialPyramidPool(nn.Module):
    """The rotation-invariant head of the symmetry-enforced model: a p4 feature map
    [B, C, 4, H, W] (square planes) -> [B, C * sum(orbits(n))].

    A plain SPP breaks the invariance the p4 layers buy: its bins at levels above 1
    permute when the input rotates. So this head pools (``mode``: max or mean) over
    the 4 rotations, then, at each level, over each orbit of bins under rotation (the
    4 bins that a 90-degree rotation cycles; the centre bin of an odd level alone):
    level n gives n^2 / 4 features per channel (n even), (n^2 + 3) / 4 (n odd).
    Pooling commutes with pooling, so it runs as one SPP of the C * 4 planes (one
    fused read of the feature map), and the rotation and orbit pools act on the small
    [B, C, 4, T] result: the feature map is read once for the rotation pooling and
    all levels.

    Args:
        levels: the pyramid's levels: 1 to 8 positive ints, or one int; default
            (1, 2, 4).
        mode: ``"max"`` (default) or ``"mean"``, for the rotations, the bins and the
            orbits alike.

    Shape:
        input: a p4 feature map [B, C, 4, H, H] (square planes), floating point;
        output: [B, output_size(C)].

    Raises:
        ValueError: bad ``levels`` or ``mode``.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 4), mode: str = "max"):
        super().__init__()
        self.levels = check_levels("P4SpatialPyramidPool", levels)
        if mode not in ("max", "mean"):
            raise ValueError(f"P4SpatialPyramidPool: argument 'mode' must be 'max' or 'mean', got {mode!r}")
        self.mode = mode
        for n in set(self.levels):
            self.register_buffer(f"_orbits_{n}", _orbits(n), persistent=False)

    def extra_repr(self) -> str:
        """The levels and mode, shown in the module's repr."""
        return f"levels={self.levels}, mode={self.mode!r}"

    def output_size(self, channels: int) -> int:
        """The number of features per sample for an input of ``channels`` p4 channels
        (the in_features of the linear layer after it).

        Args:
            channels: the input's channels C.

        Returns:
            ``channels`` times the number of orbits over the levels (n^2 / 4 for an
            even level n, (n^2 + 3) / 4 for an odd one).
        """
        return channels * sum(getattr(self, f"_orbits_{n}").shape[0] for n in self.levels)

    def forward(self, x: Tensor) -> Tensor:
        """The rotation-invariant features of ``x``.

        Args:
            x: a p4 feature map [B, C, 4, H, H], floating point, square planes with
                H >= max(levels).

        Returns:
            [B, output_size(C)] in the dtype of ``x``, level by level, channel-major
            within a level.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not [B, C, 4, H, W], its planes are not square, or it
                is smaller than the largest level.
        """
        _p4_input("P4SpatialPyramidPool", x)
        if x.shape[3] != x.shape[4]:
            raise ValueError(f"P4SpatialPyramidPool: rotation invariance needs square planes, got "
                             f"{x.shape[3]}x{x.shape[4]}")
        b, c = x.shape[:2]
        pooled = _spp.spatial_pyramid_pool(x.reshape(b, c * 4, x.shape[3], x.shape[4]), self.levels, self.mode)
        out, start = [], 0
        for n in self.levels:
            part = pooled[:, start * c * 4:(start + n * n) * c * 4].view(b, c, 4, n * n)
            start += n * n
            part = part.amax(2) if self.mode == "max" else part.mean(2)     # rotations
            orbit = part[:, :, getattr(self, f"_orbits_{n}")]               # [B, C, orbits, 4]
            out.append((orbit.amax(-1) if self.mode == "max" else orbit.mean(-1)).flatten(1))
        return torch.cat(out, 1)
