"""robustops.models.committee_lenet, the committee paper's LeNet (2 convolutions, 2
max-poolings, 2 fully connected layers, Xavier initialisation) with dropout at the
places of its Table 1: layers and output shapes, the parameter count by hand, the
initialisation (Caffe's xavier, the same weights as lenet_caffe for every dropout
configuration), where each dropout acts in train mode and that none acts in eval
mode, and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import robustops.models
from robustops.models import committee_lenet, lenet_caffe
from robustops.models.committee import DROPOUT_PLACES, TABLE1_DROPOUT, dropout_rates


def _names(model):
    return [name for name, _ in model.named_children()]


def test_table1_rows():
    # the paper's Table 1: Inp drops 0.2 of the input; All: input .2, conv1 .2, conv2 .2, full .5, output .5
    assert TABLE1_DROPOUT == {"Inp": {"input": 0.2},
                              "All": {"input": 0.2, "conv1": 0.2, "conv2": 0.2, "full": 0.5, "output": 0.5}}
    assert "committee_lenet" in robustops.models.__all__


def test_layers_and_dropout_places():
    plain = committee_lenet()
    assert _names(plain) == ["conv1", "pool1", "conv2", "pool2", "flatten", "ip1", "relu1", "ip2"]
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 20, (5, 5)), (20, 50, (5, 5))]
    assert sum(isinstance(m, nn.MaxPool2d) for m in plain.modules()) == 2
    assert [(m.in_features, m.out_features) for m in plain.modules() if isinstance(m, nn.Linear)] == [
        (800, 500), (500, 10)]
    assert _names(committee_lenet("Inp")) == ["drop_input", "conv1", "pool1", "conv2", "pool2", "flatten", "ip1",
                                              "relu1", "ip2"]
    every = committee_lenet("All")
    assert _names(every) == ["drop_input", "conv1", "drop_conv1", "pool1", "conv2", "drop_conv2", "pool2",
                             "flatten", "ip1", "relu1", "drop_full", "ip2", "drop_output"]
    assert dropout_rates(every) == TABLE1_DROPOUT["All"] and list(dropout_rates(every)) == list(DROPOUT_PLACES)
    assert dropout_rates(committee_lenet("Inp")) == {"input": 0.2}
    assert dropout_rates(committee_lenet({"conv2": 0.3, "full": 0.0})) == {"conv2": 0.3}  # rate 0: no module


@pytest.mark.parametrize("dropout", [None, "Inp", "All"])
def test_shapes_and_parameter_count(dropout):
    model = committee_lenet(dropout)
    # conv1 1*20*25 + 20, conv2 20*50*25 + 50, ip1 800*500 + 500, ip2 500*10 + 10
    assert sum(p.numel() for p in model.parameters()) == 520 + 25050 + 400500 + 5010 == 431080
    assert model.eval()(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    other = committee_lenet(dropout, in_channels=3, num_classes=7, input_size=32)
    assert other.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_xavier_init_and_the_same_weights_as_lenet_caffe():
    torch.manual_seed(3)
    reference = lenet_caffe(dropout=None)
    for dropout in (None, "Inp", "All"):
        torch.manual_seed(3)
        model = committee_lenet(dropout)
        assert model.state_dict().keys() == reference.state_dict().keys()
        for key, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[key], value)
    for m in reference.requires_grad_(False).modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = math.sqrt(3.0 / (m.weight.numel() // m.weight.shape[0]))  # Caffe's xavier: fan in
            assert float(m.weight.abs().max()) <= bound and float(m.weight.abs().max()) > 0.9 * bound
            assert float(m.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_dropout_is_off_in_eval_mode():
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(0)
    plain = committee_lenet().eval()
    for dropout in ("Inp", "All"):
        torch.manual_seed(0)
        model = committee_lenet(dropout).eval()
        assert_close(model(x), plain(x))
        model.train()
        assert not torch.allclose(model(x), plain(x))


def _input_of(model, layer, x):
    seen = {}
    handle = model.get_submodule(layer).register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    out = model(x)
    handle.remove()
    return seen["x"].detach(), out.detach()


def test_each_place_drops_its_layers_units_in_train_mode():
    """The layer after each place sees the units the plain network would give it, about
    half of them zeroed and the rest scaled by 1 / (1 - p) (p = 0.5)."""
    x = torch.rand(64, 1, 28, 28)
    torch.manual_seed(1)
    plain = committee_lenet().train()
    for place, layer in [("input", "conv1"), ("conv1", "pool1"), ("conv2", "pool2"), ("full", "ip2"),
                         ("output", None)]:
        torch.manual_seed(1)
        model = committee_lenet({place: 0.5}).train()
        if layer is None:   # the logits themselves
            seen, clean = model(x).detach(), plain(x).detach()
        else:
            # the plain network's units at the same place (before any dropout, so no mask to match)
            seen, _ = _input_of(model, layer, x)
            clean, _ = _input_of(plain, layer, x)
        live = clean != 0
        dropped = (seen == 0) & live
        assert 0.45 < float(dropped.float().sum() / live.sum()) < 0.55, place
        kept = (seen != 0)
        assert_close(seen[kept], 2 * clean[kept])
        assert torch.equal(seen[~live], clean[~live])


@pytest.mark.parametrize("dropout, error, match", [
    ("Half", ValueError, "one of Table 1's rows"),
    ({"pool1": 0.2}, ValueError, "no dropout place 'pool1'"),
    ({"input": 1.0}, ValueError, "must be a number in \\[0, 1\\)"),
    ({"input": True}, ValueError, "must be a number in \\[0, 1\\)"),
    (0.5, TypeError, "must be None, a str or a mapping"),
])
def test_bad_arguments(dropout, error, match):
    with pytest.raises(error, match=f"committee_lenet: .*{match}"):
        committee_lenet(dropout)
