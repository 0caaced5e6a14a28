"""The committee paper's network (Uličný, Lundström & Byttner, "Robustness of deep
convolutional neural networks for image recognition", Sec. 4, Fig. 2, Table 1): LeNet
with two convolutions, two max-poolings and two fully connected layers, Xavier
initialisation, and dropout at the places of its Table 1.

The paper gives the layer types, the initialisation and the dropout rates, not the
sizes: those are Caffe's MNIST LeNet (robustops.models.lenet_caffe: conv 20 5x5, max
pool 2, conv 50 5x5, max pool 2, fc 500, ReLU, fc 10, xavier fillers), which the paper's
"modification of the original LeNet" most likely is (its solver, SGD with momentum and
L2 weight decay, is Caffe's LeNet solver's).
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Dict, Mapping, Union

from torch import nn

from robustops.models.bang import lenet_caffe

__all__ = ["committee_lenet", "dropout_rates", "TABLE1_DROPOUT", "DROPOUT_PLACES"]

# where committee_lenet can drop units: each column of the paper's Table 1, in forward order
DROPOUT_PLACES = ("input", "conv1", "conv2", "full", "output")
# the paper's Table 1: the dropout rate of each layer's units ("Inp": input dropout only;
# "All": every layer). Trained for 35,000 ("Inp") and 40,000 ("All") iterations, against
# the 10,000 of the plain network (Sec. 4.1).
TABLE1_DROPOUT: Dict[str, Dict[str, float]] = {
    "Inp": {"input": 0.2},
    "All": {"input": 0.2, "conv1": 0.2, "conv2": 0.2, "full": 0.5, "output": 0.5},
}
# the module each place's Dropout follows in lenet_caffe (None: the input, before conv1)
_AFTER = {"input": None, "conv1": "conv1", "conv2": "conv2", "full": "relu1", "output": "ip2"}


def _rates(fn: str, dropout) -> Dict[str, float]:
    if dropout is None:
        return {}
    if isinstance(dropout, str):
        if dropout not in TABLE1_DROPOUT:
            raise ValueError(f"{fn}: argument 'dropout' must be None, one of Table 1's rows "
                             f"{tuple(TABLE1_DROPOUT)} or a mapping place -> rate, got {dropout!r}")
        return dict(TABLE1_DROPOUT[dropout])
    if not isinstance(dropout, Mapping):
        raise TypeError(f"{fn}: argument 'dropout' must be None, a str or a mapping place -> rate, "
                        f"got {type(dropout).__name__}")
    rates = {}
    for place, p in dropout.items():
        if place not in DROPOUT_PLACES:
            raise ValueError(f"{fn}: no dropout place {place!r} (the places are {DROPOUT_PLACES})")
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
            raise ValueError(f"{fn}: the dropout rate of {place!r} must be a number in [0, 1), got {p!r}")
        if p > 0:
            rates[place] = float(p)
    return rates


def committee_lenet(dropout: Union[None, str, Mapping[str, float]] = None, in_channels: int = 1,
                    num_classes: int = 10, input_size=28) -> nn.Sequential:
    """The committee paper's LeNet: robustops.models.lenet_caffe without its BANG
    Dropout layer (conv1 20 5x5 - pool1 max 2x2 - conv2 50 5x5 - pool2 max 2x2 -
    flatten - ip1 500 - relu1 - ip2 num_classes; 431,080 parameters at 28x28, 1
    channel, 10 classes; Caffe's xavier fillers, biases 0), with nn.Dropout modules at
    the paper's Table 1 places. Outputs are logits.

    ``dropout``: None (the plain network), "Inp" or "All" (Table 1's rows:
    TABLE1_DROPOUT), or a mapping from places (DROPOUT_PLACES) to rates in [0, 1) (0:
    no module). Each Table 1 column drops the units of its layer, as Caffe's in-place
    Dropout on the layer's output would (the paper names the layers, not the exact
    positions; this is our reading)::

        input   drop_input, the pixels, before conv1
        conv1   drop_conv1, conv1's feature maps, before pool1
        conv2   drop_conv2, conv2's feature maps, before pool2
        full    drop_full, ip1's units after relu1, before ip2
        output  drop_output, ip2's outputs (the logits)

    Every other module keeps lenet_caffe's name; the weights are drawn exactly as
    lenet_caffe(dropout=None) draws them, so the same seed gives every dropout
    configuration the same initial weights. Dropout is active in train mode only.
    """
    fn = "committee_lenet"
    rates = _rates(fn, dropout)
    base = lenet_caffe(dropout=None, in_channels=in_channels, num_classes=num_classes, input_size=input_size)
    layers = OrderedDict()
    if "input" in rates:
        layers["drop_input"] = nn.Dropout(rates["input"])
    places = {after: place for place, after in _AFTER.items() if after is not None and place in rates}
    for name, module in base.named_children():
        layers[name] = module
        if name in places:
            layers[f"drop_{places[name]}"] = nn.Dropout(rates[places[name]])
    return nn.Sequential(layers)


def dropout_rates(model: nn.Module) -> Dict[str, float]:
    """{place: rate} of a committee_lenet (its drop_PLACE modules), in forward order."""
    out: Dict[str, float] = {}
    for name, module in model.named_children():
        if isinstance(module, nn.Dropout) and name.startswith("drop_"):
            out[name[len("drop_"):]] = float(module.p)
    return out

