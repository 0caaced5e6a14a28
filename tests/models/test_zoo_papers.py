"""The model zoo against the papers, layer by layer.

- robustops.models.lenet_saf / cifar_saf: the SAF paper's (Zhao & Griffin 2016)
  Table 1 (MNIST) and Table 3 (CIFAR-10), plain and robust rows, transcribed below.
- robustops.models.lenet_caffe / cifar10_quick: Caffe's lenet_train_test.prototxt and
  cifar10_quick_train_test.prototxt (the BANG paper's networks) with its one Dropout
  layer, and the prototxts' weight fillers.

Parameter counts and feature sizes are computed by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import robustops.models
from robustops.models import cifar10_quick, cifar_saf, lenet_caffe, lenet_saf
from robustops.nn import RBF, MReLU

# ---------------------------------------------------------------------------------
# the SAF paper's tables, as printed ("-": no activation; the last column, the loss,
# and the #Layers count are checked separately)

TABLE_1 = {  # MNIST; #Layers 8 / 11 / 11
    "plain": "cv1 - max cv2 - max fc1 ReLU fc2 -",
    "rbf": "cv1 1-D_RBF max cv2 1-D_RBF max fc1 ReLU fc2 1-D_RBF",
    "mrelu": "cv1 mReLU max cv2 mReLU max fc1 ReLU fc2 1-D_RBF",
}
TABLE_3 = {  # CIFAR-10; #Layers 10 / 14 / 14
    "plain": "cv1 - max cv2 - avg cv3 - avg fc1 ReLU fc2 -",
    "rbf": "cv1 1-D_RBF max cv2 1-D_RBF avg cv3 1-D_RBF avg fc1 ReLU fc2 1-D_RBF",
    "mrelu": "cv1 mReLU max cv2 mReLU avg cv3 mReLU avg fc1 ReLU fc2 1-D_RBF",
}
LAYER_COUNT = {("lenet", "plain"): 8, ("lenet", "rbf"): 11, ("lenet", "mrelu"): 11,
               ("cifar", "plain"): 10, ("cifar", "rbf"): 14, ("cifar", "mrelu"): 14}


def _leaves(net: nn.Module):
    return [m for m in net.modules() if not list(m.children())]


def _table_row(net: nn.Module) -> str:
    """The network written as a row of the SAF paper's tables: batch norm and flatten
    (not in the tables) left out, "-" where a conv / fc layer has no activation."""
    names = {nn.MaxPool2d: "max", nn.AvgPool2d: "avg", nn.ReLU: "ReLU", RBF: "1-D_RBF", MReLU: "mReLU"}
    row, cv, fc = [], 0, 0
    for m in _leaves(net):
        if isinstance(m, (nn.BatchNorm2d, nn.Flatten, nn.Identity)):
            continue
        if isinstance(m, nn.Conv2d):
            cv += 1
            row += [f"cv{cv}", "-"]
        elif isinstance(m, nn.Linear):
            fc += 1
            row += [f"fc{fc}", "-"]
        else:
            name = names[type(m)]
            if row and row[-1] == "-" and name not in ("max", "avg"):
                row[-1] = name  # the activation of the layer before
            else:
                row.append(name)
    return " ".join(row)


def _table_layers(net: nn.Module) -> int:
    """The tables' #Layers: every layer but batch norm and flatten, plus the loss."""
    return sum(not isinstance(m, (nn.BatchNorm2d, nn.Flatten, nn.Identity)) for m in _leaves(net)) + 1


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _describe(m: nn.Module):
    """A module as a comparable tuple: its type and the settings that matter here."""
    if isinstance(m, nn.Conv2d):
        return ("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.MaxPool2d):
        return ("max", m.kernel_size, m.stride, m.padding, m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        return ("avg", m.kernel_size, m.stride, m.padding, m.ceil_mode)
    if isinstance(m, nn.Linear):
        return ("fc", m.in_features, m.out_features)
    if isinstance(m, nn.BatchNorm2d):
        return ("bn", m.num_features)
    if isinstance(m, nn.Dropout):
        return ("dropout", m.p)
    return (type(m).__name__,)


# ---------------------------------------------------------------------------------
# lenet_saf and cifar_saf: the SAF paper's Tables 1 and 3


@pytest.mark.parametrize("kind", ["plain", "rbf", "mrelu"])
def test_lenet_saf_is_table_1(kind):
    net = lenet_saf(kind)
    assert _table_row(net) == TABLE_1[kind]
    assert _table_layers(net) == LAYER_COUNT["lenet", kind]
    act = {"plain": [], "rbf": [("RBF",)], "mrelu": [("MReLU",)]}[kind]
    robust = kind != "plain"

    def block(cin, cout):
        return ([("conv", cin, cout, (5, 5), (1, 1), (0, 0))] + ([("bn", cout)] if robust else []) + act
                + [("max", 2, 2, 0, False)])

    expected = (block(1, 20) + block(20, 50)
                + [("Flatten",), ("fc", 800, 500), ("ReLU",), ("fc", 500, 10)]  # 28 -> 24 -> 12 -> 8 -> 4: 50 * 4 * 4
                + ([("RBF",)] if robust else []))
    assert [_describe(m) for m in _leaves(net) if not isinstance(m, nn.Identity)] == expected
    # conv1 20*1*25 + 20 = 520, conv2 50*20*25 + 50 = 25,050, fc1 800*500 + 500 = 400,500,
    # fc2 500*10 + 10 = 5,010: 431,080; batch norm adds 2 * (20 + 50) = 140
    assert _n_params(net) == (431_080 if kind == "plain" else 431_220)
    out = net(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10)
    if kind != "plain":
        assert ((out >= 0) & (out <= 1)).all()


@pytest.mark.parametrize("kind", ["plain", "rbf", "mrelu"])
def test_cifar_saf_is_table_3(kind):
    net = cifar_saf(kind)
    assert _table_row(net) == TABLE_3[kind]
    assert _table_layers(net) == LAYER_COUNT["cifar", kind]
    act = {"plain": [], "rbf": [("RBF",)], "mrelu": [("MReLU",)]}[kind]
    robust = kind != "plain"

    def block(cin, cout, pool):
        return ([("conv", cin, cout, (5, 5), (1, 1), (2, 2))] + ([("bn", cout)] if robust else []) + act
                + [(pool, 3, 2, 0, True)])

    expected = (block(3, 32, "max") + block(32, 32, "avg") + block(32, 64, "avg")
                + [("Flatten",), ("fc", 1024, 64), ("ReLU",), ("fc", 64, 10)]  # 32 -> 16 -> 8 -> 4: 64 * 4 * 4
                + ([("RBF",)] if robust else []))
    assert [_describe(m) for m in _leaves(net) if not isinstance(m, nn.Identity)] == expected
    # conv1 32*3*25 + 32 = 2,432, conv2 32*32*25 + 32 = 25,632, conv3 64*32*25 + 64 = 51,264,
    # fc1 1024*64 + 64 = 65,600, fc2 64*10 + 10 = 650: 145,578; batch norm adds 2 * 128 = 256
    assert _n_params(net) == (145_578 if kind == "plain" else 145_834)
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_the_plain_nets_have_relu_only_after_fc1():
    for net in (lenet_saf("plain"), cifar_saf("plain")):
        assert not any(isinstance(m, (nn.ReLU, RBF, MReLU)) for m in net.features)
        assert [type(m) for m in net.classifier] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
        assert isinstance(net.output, nn.Identity)


def test_saf_batch_norm_switch():
    plain_bn = cifar_saf("plain", batch_norm=True)
    assert [type(m) for m in plain_bn.features][:3] == [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d]
    assert not any(isinstance(m, (nn.ReLU, RBF, MReLU)) for m in plain_bn.features)
    no_bn = lenet_saf("mrelu", batch_norm=False)
    assert [type(m) for m in no_bn.features] == [nn.Conv2d, MReLU, nn.MaxPool2d, nn.Conv2d, MReLU, nn.MaxPool2d]


@pytest.mark.parametrize("size, lenet_flat, cifar_flat", [
    # lenet: 20x36 -> conv 16x32 -> pool 8x16 -> conv 4x12 -> pool 2x6: 50*12 = 600
    # cifar (ceil pooling, ceil((n - 3) / 2) + 1): 20 -> 10 -> 5 -> 2, 36 -> 18 -> 9 -> 4: 64*8 = 512
    ((20, 36), 600, 512),
    # lenet 16 -> 12 -> 6 -> 2 -> 1: 50; cifar 16 -> 8 -> 4 -> 2: 64*4 = 256
    (16, 50, 256),
    # cifar 28 -> 14 -> 7 -> 3: 64*9 = 576
    (28, 800, 576),
])
def test_saf_nets_other_input_sizes(size, lenet_flat, cifar_flat):
    h, w = (size, size) if isinstance(size, int) else size
    lenet = lenet_saf("rbf", in_channels=3, num_classes=7, input_size=size)
    assert lenet.classifier[1].in_features == lenet_flat
    assert lenet(torch.rand(2, 3, h, w)).shape == (2, 7)
    cifar = cifar_saf("plain", in_channels=1, num_classes=100, input_size=size)
    assert cifar.classifier[1].in_features == cifar_flat
    assert cifar(torch.rand(2, 1, h, w)).shape == (2, 100)


def _caffe_ave_pool(x: torch.Tensor, k: int = 3, s: int = 2) -> torch.Tensor:
    """Caffe's PoolingLayer AVE forward without padding: ceil((n - k) / s) + 1
    outputs, each the mean of the values of its window that lie inside the input."""
    h, w = x.shape[-2:]
    oh, ow = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
    out = torch.empty(*x.shape[:-2], oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * s, j * s
            h1, w1 = min(h0 + k, h), min(w0 + k, w)
            out[..., i, j] = x[..., h0:h1, w0:w1].sum(dim=(-2, -1)) / ((h1 - h0) * (w1 - w0))
    return out


def _caffe_max_pool(x: torch.Tensor, k: int = 3, s: int = 2) -> torch.Tensor:
    h, w = x.shape[-2:]
    oh, ow = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
    out = torch.empty(*x.shape[:-2], oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[..., i, j] = x[..., i * s:i * s + k, j * s:j * s + k].amax(dim=(-2, -1))
    return out


@pytest.mark.parametrize("hw", [(8, 9), (16, 16), (7, 10)])
def test_cifar_pooling_is_caffes(hw):
    """The 3x3 stride-2 poolings of both CIFAR nets give Caffe's output sizes and, on
    windows clipped by the border, Caffe's averages."""
    x = torch.rand(2, 3, *hw, dtype=torch.float64)
    saf_pools = [m for m in cifar_saf("plain").features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    quick = cifar10_quick()
    for max_pool, avg_pools in ((saf_pools[0], saf_pools[1:]), (quick.pool1, [quick.pool2, quick.pool3])):
        torch.testing.assert_close(max_pool(x), _caffe_max_pool(x), rtol=0, atol=0)
        for pool in avg_pools:
            torch.testing.assert_close(pool(x), _caffe_ave_pool(x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------
# lenet_caffe and cifar10_quick: Caffe's prototxts plus the BANG paper's Dropout

LENET_CAFFE = [
    ("conv1", ("conv", 1, 20, (5, 5), (1, 1), (0, 0))),
    ("pool1", ("max", 2, 2, 0, False)),
    ("conv2", ("conv", 20, 50, (5, 5), (1, 1), (0, 0))),
    ("pool2", ("max", 2, 2, 0, False)),
    ("flatten", ("Flatten",)),
    ("ip1", ("fc", 800, 500)),  # 28 -> 24 -> 12 -> 8 -> 4: 50 * 4 * 4
    ("relu1", ("ReLU",)),
    ("drop1", ("dropout", 0.5)),
    ("ip2", ("fc", 500, 10)),
]
CIFAR10_QUICK = [
    ("conv1", ("conv", 3, 32, (5, 5), (1, 1), (2, 2))),
    ("pool1", ("max", 3, 2, 0, True)),
    ("relu1", ("ReLU",)),  # after pool1, as in the prototxt
    ("conv2", ("conv", 32, 32, (5, 5), (1, 1), (2, 2))),
    ("relu2", ("ReLU",)),
    ("pool2", ("avg", 3, 2, 0, True)),
    ("conv3", ("conv", 32, 64, (5, 5), (1, 1), (2, 2))),
    ("relu3", ("ReLU",)),
    ("pool3", ("avg", 3, 2, 0, True)),
    ("flatten", ("Flatten",)),
    ("ip1", ("fc", 1024, 64)),  # 32 -> 16 -> 8 -> 4: 64 * 4 * 4; no ReLU after ip1
    ("drop1", ("dropout", 0.5)),
    ("ip2", ("fc", 64, 10)),
]


def _layers(net: nn.Sequential):
    return [(name, _describe(m)) for name, m in net.named_children()]


def test_lenet_caffe_is_caffes_lenet_plus_dropout():
    net = lenet_caffe()
    assert isinstance(net, nn.Sequential)
    assert _layers(net) == LENET_CAFFE
    # 520 + 25,050 + 400,500 + 5,010 (Dropout has none)
    assert _n_params(net) == 431_080
    assert net(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_cifar10_quick_is_caffes_plus_dropout():
    net = cifar10_quick()
    assert isinstance(net, nn.Sequential)
    assert _layers(net) == CIFAR10_QUICK
    # 2,432 + 25,632 + 51,264 + 65,600 + 650
    assert _n_params(net) == 145_578
    assert net(torch.rand(4, 3, 32, 32)).shape == (4, 10)


@pytest.mark.parametrize("build, layers", [(lenet_caffe, LENET_CAFFE), (cifar10_quick, CIFAR10_QUICK)])
@pytest.mark.parametrize("dropout", [0, 0.0, None])
def test_no_dropout_layer_for_zero_or_none(build, layers, dropout):
    net = build(dropout=dropout)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    assert _layers(net) == [layer for layer in layers if layer[0] != "drop1"]


@pytest.mark.parametrize("build, before", [(lenet_caffe, "relu1"), (cifar10_quick, "ip1")])
def test_one_dropout_layer_before_the_class_layer(build, before):
    net = build(dropout=0.3)
    names = [name for name, _ in net.named_children()]
    drops = [name for name, m in net.named_children() if isinstance(m, nn.Dropout)]
    assert drops == ["drop1"] and net.drop1.p == 0.3
    i = names.index("drop1")
    assert names[i - 1] == before and names[i + 1] == "ip2" and names[-1] == "ip2"
    # active in training, the identity in eval mode
    size = 28 if build is lenet_caffe else 32
    x = torch.rand(8, net.conv1.in_channels, size, size)
    net.eval()
    assert torch.equal(net(x), net(x))
    torch.manual_seed(0)
    net.train()
    assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("kwargs, flat, shape", [
    # 3x32x32: 32 -> 28 -> 14 -> 10 -> 5: 50*25 = 1250
    (dict(in_channels=3, num_classes=5, input_size=32), 1250, (2, 3, 32, 32)),
    # 20x36: 16x32 -> 8x16 -> 4x12 -> 2x6: 50*12 = 600
    (dict(input_size=(20, 36), num_classes=2), 600, (2, 1, 20, 36)),
    # 16: 12 -> 6 -> 2 -> 1: 50
    (dict(input_size=16), 50, (2, 1, 16, 16)),
])
def test_lenet_caffe_other_sizes(kwargs, flat, shape):
    net = lenet_caffe(**kwargs)
    assert net.ip1.in_features == flat and net.conv1.in_channels == shape[1]
    assert net(torch.rand(shape)).shape == (shape[0], kwargs.get("num_classes", 10))


@pytest.mark.parametrize("kwargs, flat, shape", [
    # 1x28x28: 28 -> 14 -> 7 -> 3: 64*9 = 576
    (dict(in_channels=1, num_classes=10, input_size=28), 576, (2, 1, 28, 28)),
    # 20x36: 20 -> 10 -> 5 -> 2, 36 -> 18 -> 9 -> 4: 64*8 = 512
    (dict(input_size=(20, 36), num_classes=100), 512, (2, 3, 20, 36)),
    # 8: 8 -> 4 -> 2 -> 1: 64
    (dict(input_size=8), 64, (2, 3, 8, 8)),
])
def test_cifar10_quick_other_sizes(kwargs, flat, shape):
    net = cifar10_quick(**kwargs)
    assert net.ip1.in_features == flat and net.conv1.in_channels == shape[1]
    assert net(torch.rand(shape)).shape == (shape[0], kwargs.get("num_classes", 10))


# ---------------------------------------------------------------------------------
# initialisation: the prototxts' fillers


@pytest.mark.parametrize("in_channels, size, fan_in", [
    (1, 28, {"conv1": 25, "conv2": 500, "ip1": 800, "ip2": 500}),
    (3, 32, {"conv1": 75, "conv2": 500, "ip1": 1250, "ip2": 500}),
])
def test_lenet_caffe_xavier_init(in_channels, size, fan_in):
    """"xavier" (variance_norm FAN_IN): uniform(-sqrt(3 / fan_in), sqrt(3 / fan_in));
    "constant" biases: 0."""
    torch.manual_seed(0)
    net = lenet_caffe(in_channels=in_channels, input_size=size)
    for name, n in fan_in.items():
        layer = getattr(net, name)
        w = layer.weight.detach().double()
        bound = math.sqrt(3.0 / n)
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.95 * bound  # not PyTorch's default bound sqrt(1 / fan_in)
        # uniform(-b, b): standard deviation b / sqrt(3), mean 0
        assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.1, name
        assert abs(w.mean().item()) < 4 * bound / math.sqrt(3 * w.numel())
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_cifar10_quick_gaussian_init():
    """"gaussian" weights with the prototxt's std per layer, mean 0; biases 0."""
    torch.manual_seed(0)
    net = cifar10_quick()
    for name, std in {"conv1": 1e-4, "conv2": 1e-2, "conv3": 1e-2, "ip1": 0.1, "ip2": 0.1}.items():
        layer = getattr(net, name)
        w = layer.weight.detach().double()
        assert abs(w.std().item() / std - 1) < 0.1, name
        assert abs(w.mean().item()) < 4 * std / math.sqrt(w.numel()), name
        if w.numel() >= 2000:  # Gaussian tails: a uniform with this std stops at 1.73 std
            assert w.abs().max() > 3 * std, name
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_exported():
    for name in ("lenet_caffe", "cifar10_quick", "lenet_saf", "cifar_saf"):
        assert name in robustops.models.__all__
        assert callable(getattr(robustops.models, name))


# ---------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("build", [lenet_caffe, cifar10_quick])
def test_caffe_nets_bad_arguments(build):
    fn = build.__name__
    for bad in (-0.1, 1.0, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=rf"^{fn}: argument 'dropout' must be in \[0, 1\)"):
            build(dropout=bad)
    for bad in ("0.5", True, [0.5]):
        with pytest.raises(TypeError, match=rf"^{fn}: argument 'dropout' must be None or a number"):
            build(dropout=bad)
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'in_channels' must be >= 1, got 0$"):
        build(in_channels=0)
    with pytest.raises(TypeError, match=rf"^{fn}: argument 'in_channels' must be an int, got float$"):
        build(in_channels=1.0)
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'num_classes' must be >= 1, got 0$"):
        build(num_classes=0)
    with pytest.raises(TypeError, match=rf"^{fn}: argument 'num_classes' must be an int, got str$"):
        build(num_classes="10")
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'input_size' must be >= 1, got 0$"):
        build(input_size=(28, 0))
    for bad in ((28,), (28, 28, 28), "28", 28.0):
        with pytest.raises(TypeError, match=rf"^{fn}: argument 'input_size' must be an int or a pair of ints"):
            build(input_size=bad)
    too_small = 15 if build is lenet_caffe else 7
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'input_size' \({too_small}, {too_small}\) is too small"):
        build(input_size=too_small)
    build(input_size=too_small + 1)  # the documented minimum works


@pytest.mark.parametrize("build", [lenet_saf, cifar_saf])
def test_saf_nets_bad_arguments(build):
    fn = build.__name__
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'kind' must be one of \('plain', 'rbf', 'mrelu'\), "
                                         r"got 'relu'$"):
        build("relu")
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'in_channels' must be >= 1, got 0$"):
        build(in_channels=0)
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'num_classes' must be >= 1, got -1$"):
        build(num_classes=-1)
    with pytest.raises(TypeError, match=rf"^{fn}: argument 'batch_norm' must be None or a bool, got str$"):
        build(batch_norm="yes")
    with pytest.raises(TypeError, match=rf"^{fn}: argument 'input_size' must be an int or a pair of ints"):
        build(input_size=(32,))
    too_small = 15 if build is lenet_saf else 7
    with pytest.raises(ValueError, match=rf"^{fn}: argument 'input_size' \({too_small}, {too_small}\) is too small"):
        build(input_size=too_small)
    build(input_size=too_small + 1)
