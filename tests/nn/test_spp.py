"""robustops.nn.SpatialPyramidPool, the module of the spp family: a fixed output size
for any input size, the op's numbers (robustops.ops.spatial_pyramid_pool, whose own
tests are tests/ops/test_spp.py), bad arguments and input, and the name kept in
robustops.nn.p4 for compatibility. The p4 head, P4SpatialPyramidPool:
tests/nn/test_p4.py."""

from __future__ import annotations

import pytest
import torch

import robustops.nn.p4
import robustops.nn.spp
from robustops.nn import SpatialPyramidPool
from robustops.ops import spatial_pyramid_pool
from tests.common import randn
from tests.ops.test_spp import SIZES

F64 = torch.float64


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_output_size_is_fixed(mode):
    pool = SpatialPyramidPool(mode=mode)
    assert pool.output_size(3) == 3 * 21
    for h, w in SIZES:
        x = randn(2, 3, h, w)
        out = pool(x)
        assert out.shape == (2, 3 * 21), (h, w)
        assert torch.equal(out, spatial_pyramid_pool(x, (1, 2, 4), mode))
    pool = SpatialPyramidPool((3, 1), mode)
    assert pool(randn(1, 2, 5, 3)).shape == (1, 2 * 10) and pool.output_size(2) == 20
    assert SpatialPyramidPool(2, mode)(randn(1, 2, 5, 3)).shape == (1, 8)


def test_bad_input():
    x = randn(2, 3, 5, 6)
    with pytest.raises(ValueError, match="SpatialPyramidPool: argument 'levels' must be 1 to 8 positive ints"):
        SpatialPyramidPool((1, 0))
    with pytest.raises(ValueError, match="SpatialPyramidPool: argument 'levels'"):
        SpatialPyramidPool(())
    with pytest.raises(ValueError, match="SpatialPyramidPool: argument 'mode'"):
        SpatialPyramidPool(mode="min")
    with pytest.raises(ValueError, match="SpatialPyramidPool: argument 'levels' must be 1 to 8"):
        SpatialPyramidPool(tuple(range(1, 10)))  # caught when built
    with pytest.raises(ValueError, match="argument 'x' has 3x6 planes"):
        SpatialPyramidPool()(x[:, :, :3])


def test_rejects_integer_and_non_tensor_input():
    x = torch.ones(2, 3, 6, 6, dtype=torch.long)
    with pytest.raises(TypeError, match="^SpatialPyramidPool: argument 'x' must be a floating-point tensor, "
                                        "got torch.int64"):
        SpatialPyramidPool()(x)
    with pytest.raises(TypeError, match="^SpatialPyramidPool: argument 'x' must be a Tensor, got list"):
        SpatialPyramidPool()(x.tolist())


def test_the_old_path_still_names_the_module():
    # robustops.nn.p4 re-exports SpatialPyramidPool for compatibility (imports and
    # pickles that name it there)
    assert robustops.nn.p4.SpatialPyramidPool is robustops.nn.spp.SpatialPyramidPool is SpatialPyramidPool
    assert SpatialPyramidPool.__module__ == "robustops.nn.spp"
