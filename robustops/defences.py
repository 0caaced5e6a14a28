"""Defences and robust training methods of the papers robustops implements::

    fit(model, loader, optimizer, epochs, loss=...)   a plain training loop (tqdm)
    adversarial_loss(model, x, y, attack)             FGS adversarial training
                                                      (Goodfellow et al.): alpha CE(x) +
                                                      (1 - alpha) CE(x_adv)
    Committee, train_committee(...)                   the adversarial committee: a model
                                                      trained on natural data, then in
                                                      stages on the clean data joined
                                                      with pools of adversarial examples
                                                      made by its snapshots (or, option
                                                      "online", on its live adversarial
                                                      examples alone), each stage's
                                                      snapshot a member; prediction =
                                                      the members' average probability
    with_dropout(model, {"name": p})                  dropout after the named layers (the
                                                      committee paper's per-layer table)
    LowPassNoise(sigma, noise, kernel)                preprocessing: noise injection, then a
                                                      Gaussian low-pass filter (the paper's order)
    DenoisingAutoencoder, train_denoiser(...)         784-1000-500-250-30-250-500-1000-784,
                                                      trained with input dropout, as
                                                      preprocessing (Preprocessed)
    mean_training_batch(...), random_training_batch(...)
                                                      the SAF paper's mean training (noisy
                                                      copies of the training mean labelled
                                                      as nonsense, an extra output) and
                                                      random training (noise of size delta
                                                      on a fraction of the data)

Inputs are images in [0, 1]; everything here keeps them there.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops._checks import check_choice, check_floating, check_int, check_label_shape
from robustops.attacks import Attack, CommitteeExample
from robustops.nn.saf import RBF

__all__ = ["fit", "adversarial_loss", "Committee", "train_committee", "with_dropout", "LowPassNoise",
           "DenoisingAutoencoder", "train_denoiser", "Preprocessed", "mean_training_batch",
           "random_training_batch"]

Batch = Tuple[Tensor, Tensor]


def _progress(iterable, desc: str, progress: Optional[bool], total: Optional[int] = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False,
                disable=None if progress is None else not progress)


def _last_leaf(model: nn.Module) -> nn.Module:
    """The last module without children in model.modules() order (the model itself
    when it has none): the output layer of a model that registers its layers in the
    order it runs them."""
    last = model
    for m in model.modules():
        if next(m.children(), None) is None:
            last = m
    return last


def fit(model: nn.Module, loader: Iterable[Batch], optimizer: torch.optim.Optimizer, epochs: int = 1,
        loss: Optional[Callable[[nn.Module, Tensor, Tensor], Tensor]] = None, device=None,
        progress: Optional[bool] = None) -> List[float]:
    """Train ``model`` for ``epochs`` over ``loader`` (batches (x, y)) with
    ``loss(model, x, y)`` (default: cross-entropy of model(x)); returns the mean loss
    of every epoch. The model is left in train mode.

    With the default loss, a model whose output layer is an RBF (robustops.nn.RBF, the
    SAF networks' robust kinds) gets a UserWarning: cross-entropy on those outputs is
    not the SAF paper's loss (robustops.nn.HybridLoss is). The output layer is taken
    to be the last leaf module in ``model.modules()`` order, which is the last layer
    of an nn.Sequential or of a model that registers its layers in forward order (as
    the SAF networks do); pass ``loss`` to be explicit."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"robustops.defences.fit: argument 'model' must be an nn.Module, got {type(model).__name__}")
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"robustops.defences.fit: argument 'epochs' must be an int >= 0, got {epochs!r}")
    if loss is None and isinstance(_last_leaf(model), RBF):
        warnings.warn("robustops.defences.fit: the model's output layer is an RBF (robustops.nn.RBF, outputs in "
                      "[0, 1]) and the default loss is cross-entropy on those outputs, which is not what the SAF "
                      "paper trains them with: pass its hybrid loss, robustops.nn.HybridLoss, e.g. "
                      "loss=lambda m, x, y: robustops.nn.HybridLoss()(m(x), y)", UserWarning, stacklevel=2)
    loss = loss if loss is not None else (lambda m, x, y: F.cross_entropy(m(x), y))
    history = []
    for epoch in _progress(range(epochs), "epochs", progress, epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in loader:
            if device is not None:
                x, y = x.to(device), y.to(device)
            value = loss(model, x, y)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            total += float(value.detach()) * len(x)
            count += len(x)
        history.append(total / count if count else math.nan)
    return history


def adversarial_loss(model: nn.Module, x: Tensor, y: Tensor, attack: Attack, alpha: float = 0.5,
                     loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> Tensor:
    """alpha loss(model(x), y) + (1 - alpha) loss(model(x_adv), y), x_adv = attack(x, y)
    made from the model as it is now (FGS adversarial training: ``attack =
    robustops.attacks.FGSM(model, eps)``). The attack runs in eval mode and leaves the
    model's mode as it was (train mode for the two forward passes here)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"robustops.defences.adversarial_loss: argument 'alpha' must be in [0, 1], got {alpha}")
    x_adv = attack(x, y)
    clean = loss_fn(model(x), y) if alpha > 0 else x.new_zeros(())
    adv = loss_fn(model(x_adv), y) if alpha < 1 else x.new_zeros(())
    return alpha * clean + (1 - alpha) * adv


class Committee(nn.Module):
    """The members' average: the mean of their softmax probabilities (``output``
    "probs", the default), its log ("log_probs": what the attacks' default
    cross-entropy expects, so attack a committee built with it), or the mean of the
    outputs as they are ("mean").

    train_committee returns one (with ``picked_epochs`` and ``selection_scores`` set).

    Args:
        members: the member models (at least one), each returning logits [B, K] (any
            common output shape for ``output="mean"``); kept in an nn.ModuleList.
        output: ``"probs"`` (default), ``"log_probs"`` or ``"mean"``.

    Raises:
        ValueError: no members, or another ``output``.
    """

    def __init__(self, members: Sequence[nn.Module], output: str = "probs"):
        super().__init__()
        if not members:
            raise ValueError("robustops.defences.Committee: argument 'members' must not be empty")
        if output not in ("probs", "log_probs", "mean"):
            raise ValueError("robustops.defences.Committee: argument 'output' must be 'probs', 'log_probs' or 'mean', "
                             f"got {output!r}")
        self.members = nn.ModuleList(members)
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        """Run every member on ``x`` and average.

        Args:
            x: the input batch, as the members take it.

        Returns:
            The mean of the members' softmax probabilities [B, K] ("probs"), its log,
            computed stably as a log-sum-exp of the log-softmaxes ("log_probs"), or the
            mean of their outputs ("mean", the members' output shape).
        """
        outs = torch.stack([m(x) for m in self.members])
        if self.output == "mean":
            return outs.mean(0)
        if self.output == "log_probs":  # log of the mean probability, stably
            return outs.log_softmax(2).logsumexp(0) - math.log(len(self.members))
        return outs.softmax(2).mean(0)


class _JoinedBatches:
    """The batches of (x, y) in chunks of ``batch_size``: in order, or in a new random
    order on each pass (``shuffle``, drawn from ``generator``). Re-iterable, so fit
    can make several epochs over it: each iteration is one whole pass, or, with
    ``batches_per_epoch``, that many batches of an endless stream of passes, each
    iteration carrying on where the last one stopped."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool,
                 generator: Optional[torch.Generator], batches_per_epoch: Optional[int] = None):
        self.x, self.y, self.batch_size, self.shuffle, self.generator = x, y, batch_size, shuffle, generator
        self.batches_per_epoch, self._stream = batches_per_epoch, None

    def __len__(self) -> int:
        return self.batches_per_epoch if self.batches_per_epoch is not None else -(-len(self.x) // self.batch_size)

    def _pass(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for i in range(0, n, self.batch_size):
            if order is None:
                yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]
            else:
                idx = order[i:i + self.batch_size].to(self.x.device)
                yield self.x[idx], self.y[idx.to(self.y.device)]

    def _passes(self):
        while True:
            yield from self._pass()

    def __iter__(self):
        if self.batches_per_epoch is None:
            return self._pass()
        if self._stream is None:
            self._stream = self._passes()
        return itertools.islice(self._stream, self.batches_per_epoch)


def _make_pool(attack: Attack, x: Tensor, y: Tensor, batch_size: int, device) -> Tensor:
    """attack(x, y) in chunks of ``batch_size`` (on ``device`` when given), returned
    where x is."""
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        out.append(attack(xb, yb).to(x.device))
    return torch.cat(out)


def _train_phase(model: nn.Module, loader, optimizer: torch.optim.Optimizer, epochs: int, phase: int,
                 members: List[nn.Module], select: Optional[Callable[[nn.Module, int, List[nn.Module]], float]],
                 device, progress: Optional[bool], loss=None) -> Tuple[int, List[float]]:
    """One phase of train_committee: ``epochs`` epochs of fit; with ``select``, epoch
    by epoch, each scored by select(model, phase, members) in eval mode, and the model and the
    optimizer restored to the best epoch (the first best on ties). Returns (the epoch
    the phase ends at, 1-based, 0 when it has none; the scores, one per epoch)."""
    if select is None or epochs == 0:
        fit(model, loader, optimizer, epochs, loss=loss, device=device, progress=progress)
        return epochs, []
    best, best_state, best_optimizer, scores = 0, None, None, []
    for epoch in range(1, epochs + 1):
        fit(model, loader, optimizer, 1, loss=loss, device=device, progress=False)
        model.eval()
        score = float(select(model, phase, list(members)))
        scores.append(score)
        if best == 0 or score > scores[best - 1]:
            best = epoch
            best_state = copy.deepcopy(model.state_dict())
            best_optimizer = copy.deepcopy(optimizer.state_dict())
    model.load_state_dict(best_state)
    optimizer.load_state_dict(best_optimizer)
    model.train()
    return best, scores


def train_committee(model: nn.Module, loader: Iterable[Batch],
                    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer], stages: int = 3,
                    epochs: int = 1, attack_factory: Callable[[nn.Module], Attack] = None,
                    natural_epochs: Optional[int] = None, device=None,
                    progress: Optional[bool] = None, protocol: str = "pools", batch_size: Optional[int] = None,
                    shuffle: bool = True, seed: Optional[int] = 0,
                    select: Optional[Callable[[nn.Module, int, List[nn.Module]], float]] = None,
                    batches_per_epoch: Optional[int] = None) -> Committee:
    """The adversarial committee of Ulicny et al. ("Robustness of deep convolutional
    neural networks for image recognition", Sec. 3 and 4). Both protocols first train
    ``model`` on the natural data of ``loader`` for ``natural_epochs`` (default
    ``epochs``) and take a snapshot of it, member 0; ``optimizer_factory(model)`` makes
    the one optimizer used throughout (its state carries over from phase to phase).
    The adversarial examples come from ``attack_factory(net)``, by default the paper's
    committee example CommitteeExample(net, eps=0.1, c=1.0).

    ``protocol="pools"`` (the default; the paper's protocol): the training set
    (x, y) is read from one pass of ``loader`` after the natural training (a shuffling
    or augmenting loader is thus fixed at that pass). Then, for stage k = 1 ..
    ``stages``: the snapshot member k - 1 (the model as it is at the start of stage k;
    member 0 for stage 1) makes the pool P_k = attack_factory(member k - 1)(x, y), one
    adversarial example per training example (the same size as the training set,
    labels y); the model trains for ``epochs`` on the clean data joined with every pool
    so far, (x, P_1, ..., P_k) with labels (y, y, ..., y), so the natural data are
    never dropped and earlier pools keep being seen; then its snapshot is member k.
    The joined set is batched by ``batch_size`` (default: the size of the loader's
    first batch), in a new random order every pass when ``shuffle`` (drawn from a
    generator seeded with ``seed``; None: torch's global generator), else in the order
    x, P_1, ..., P_k. An epoch of a stage is one pass over the joined set, or, with
    ``batches_per_epoch``, that many batches of it, taken from a stream of passes that
    each epoch continues (so every example is seen equally often): with the number of
    batches of a natural epoch, every stage trains the same number of iterations
    whatever the size of its joined set, as the paper's stages do (5000 iterations
    each). Pools are made in chunks of ``batch_size`` and kept where the loader's
    tensors are (moved to ``device`` per batch).

    ``protocol="online"`` (the behaviour before the pools protocol): each stage trains
    for ``epochs`` over ``loader`` on the adversarial examples alone, made from the live
    model at the start of each batch (``attack_factory(model)``, built once); the clean
    data are not seen again after the natural training. Member k is the snapshot after
    stage k. ``batch_size``, ``shuffle``, ``seed`` and ``batches_per_epoch`` are
    ignored.

    ``select`` (optional, both protocols): a score, higher is better, ``select(net,
    phase, members)`` with phase 0 for the natural training and k for stage k, and
    ``members`` the snapshots taken so far (members 0 .. k - 1: in the pools protocol
    the ones whose pools stage k trains on), e.g. the accuracy on a validation split,
    clean for phase 0 and, for a stage, on the clean validation images joined with their
    pools made by ``members`` as the training pools are. With it every phase is trained
    epoch by epoch, the model scored after each epoch (in eval mode), and the phase ends
    at its best epoch (the first best on ties): the model's weights and the optimizer's
    state are restored to that epoch before the snapshot is taken (and, in the pools
    protocol, before the next pool is made from it). Without it (the default) every
    phase ends at its last epoch.

    Returns the Committee (average of the probabilities) of the ``stages + 1`` members
    in order [natural network, after stage 1, ..., after stage ``stages``] (deep copies,
    in eval mode): 6 members for the paper's 5 stages. Its ``picked_epochs`` is the
    epoch each member was taken at (1-based; the last epoch of its phase without
    ``select``, 0 for a phase of no epochs) and its ``selection_scores`` the scores of
    every epoch of every phase (empty lists without ``select``). ``model`` is left
    trained (in train mode) as the last member."""
    fn = "robustops.defences.train_committee"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: argument 'model' must be an nn.Module, got {type(model).__name__}")
    if not callable(optimizer_factory):
        raise TypeError(f"{fn}: argument 'optimizer_factory' must be callable (model -> optimizer), got "
                        f"{type(optimizer_factory).__name__}")
    if attack_factory is not None and not callable(attack_factory):
        raise TypeError(f"{fn}: argument 'attack_factory' must be None or callable (model -> attack), got "
                        f"{type(attack_factory).__name__}")
    if select is not None and not callable(select):
        raise TypeError(f"{fn}: argument 'select' must be None or callable ((net, phase, members) -> score), got "
                        f"{type(select).__name__}")
    stages = check_int(fn, "stages", stages, 0)
    epochs = check_int(fn, "epochs", epochs, 0)
    natural_epochs = epochs if natural_epochs is None else check_int(fn, "natural_epochs", natural_epochs, 0)
    protocol = check_choice(fn, "protocol", protocol, ("pools", "online"))
    if batch_size is not None:
        batch_size = check_int(fn, "batch_size", batch_size, 1)
    if batches_per_epoch is not None:
        batches_per_epoch = check_int(fn, "batches_per_epoch", batches_per_epoch, 1)
    if not isinstance(shuffle, bool):
        raise TypeError(f"{fn}: argument 'shuffle' must be a bool, got {type(shuffle).__name__}")
    if seed is not None:
        seed = check_int(fn, "seed", seed)
    attack_factory = attack_factory if attack_factory is not None else (lambda m: CommitteeExample(m, 0.1, 1.0))
    optimizer = optimizer_factory(model)
    picked, scores = [], []

    def phase(data, n_epochs: int, k: int, loss=None, bar: Optional[bool] = progress) -> None:
        epoch, history = _train_phase(model, data, optimizer, n_epochs, k, members, select, device, bar, loss)
        picked.append(epoch)
        scores.append(history)
        members.append(copy.deepcopy(model).eval())

    def done() -> Committee:
        committee = Committee(members)
        committee.picked_epochs, committee.selection_scores = picked, scores
        return committee

    members: List[nn.Module] = []
    phase(loader, natural_epochs, 0)
    if protocol == "online":
        attack = attack_factory(model)
        for k in _progress(range(1, stages + 1), "committee stages", progress, stages):
            phase(loader, epochs, k, loss=lambda m, x, y: F.cross_entropy(m(attack(x, y)), y), bar=False)
        return done()

    if stages == 0:
        return done()
    batches = list(loader)
    if not batches:
        raise ValueError(f"{fn}: argument 'loader' yielded no batches (the pools protocol needs the training set)")
    batch_size = batch_size if batch_size is not None else max(len(batches[0][0]), 1)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    del batches
    generator = torch.Generator().manual_seed(seed) if (shuffle and seed is not None) else None
    xs, ys = [x], [y]
    for k in _progress(range(1, stages + 1), "committee stages", progress, stages):
        snapshot = members[-1]  # the model as it is now, in eval mode
        xs.append(_make_pool(attack_factory(snapshot), x, y, batch_size, device))
        ys.append(y)
        joined = _JoinedBatches(torch.cat(xs), torch.cat(ys), batch_size, shuffle, generator, batches_per_epoch)
        phase(joined, epochs, k, bar=False)
    return done()


def with_dropout(model: nn.Module, rates: Dict[str, float]) -> nn.Module:
    """Dropout (rate p) after each named submodule (names as in model.named_modules()),
    in place: the submodule is replaced by Sequential(submodule, Dropout(p)). For
    the committee paper's per-layer dropout configurations. Returns the model."""
    names = dict(model.named_modules())
    for name, p in rates.items():
        if name not in names or name == "":
            raise ValueError(f"robustops.defences.with_dropout: no submodule named {name!r} "
                             f"(have {[n for n in names if n]})")
        if not 0 <= p < 1:
            raise ValueError(f"robustops.defences.with_dropout: the rate of {name!r} must be in [0, 1), got {p}")
        parent_name, _, child = name.rpartition(".")
        parent = names[parent_name]
        setattr(parent, child, nn.Sequential(names[name], nn.Dropout(p)))
    return model


def _shifted_sum(x: Tensor, taps, dim: int, size: int) -> Tensor:
    """sum_i taps[i] * x.narrow(dim, i, size): a 1-D correlation along ``dim``."""
    out = x.narrow(dim, 0, size) * taps[0]
    for i, t in enumerate(taps[1:], 1):
        out = out.add(x.narrow(dim, i, size), alpha=t)
    return out


# the committee paper's three low-pass kernels: taps -> the variance of the Gaussian function
# sampled at `taps` evenly spaced points over [-3, 3]
PAPER_KERNELS = {3: 7.0, 5: 1.3, 7: 0.6}


class LowPassNoise(nn.Module):
    """Preprocessing, as the committee paper applies it: additive Gaussian noise of
    standard deviation ``noise`` (in training and in eval mode: it is part of the
    defence) "to destroy the regions created by adversarial noise", THEN a Gaussian
    low-pass filter (separable, per channel, reflect padding), then a clamp to [0, 1].

    The filter is either a Gaussian of standard deviation ``sigma`` pixels (kernel 2
    ceil(3 sigma) + 1 taps; ``sigma`` = 0 skips the filter), or, with ``kernel`` = 3,
    5 or 7, one of the paper's three kernels: the Gaussian function sampled at
    ``kernel`` evenly spaced points over [-3, 3] (the ends included: the paper says
    "defined in range (-3, 3)"), of variance 7, 1.3 and 0.6 respectively, normalized
    to sum 1 (``sigma`` is then ignored). Before this release the filter came first
    and the noise after it.

    Args:
        sigma: the Gaussian filter's standard deviation in pixels, >= 0 (default 1.0;
            0: no filter).
        noise: the standard deviation of the additive Gaussian noise, >= 0 (default
            0.05; 0: no noise).
        kernel: None (default: the filter from ``sigma``) or 3, 5 or 7, the paper's
            kernels.

    Shape:
        input: [B, C, H, W], floating point, images in [0, 1]; output: the same shape
        and dtype, in [0, 1].

    Raises:
        ValueError: a negative ``sigma`` or ``noise``, or another ``kernel``.
    """

    def __init__(self, sigma: float = 1.0, noise: float = 0.05, kernel: Optional[int] = None):
        super().__init__()
        if not (sigma >= 0 and noise >= 0):
            raise ValueError(f"robustops.defences.LowPassNoise: 'sigma' and 'noise' must be >= 0, got {sigma}, {noise}")
        if kernel is not None and kernel not in PAPER_KERNELS:
            raise ValueError(f"robustops.defences.LowPassNoise: argument 'kernel' must be None or one of the paper's "
                             f"kernel sizes {tuple(PAPER_KERNELS)}, got {kernel!r}")
        self.sigma, self.noise, self.kernel_size = float(sigma), float(noise), kernel
        if kernel is not None:
            t = torch.linspace(-3.0, 3.0, kernel, dtype=torch.float64)
            k = torch.exp(-t * t / (2 * PAPER_KERNELS[kernel]))
        elif self.sigma > 0:
            radius = int(math.ceil(3 * self.sigma))
            t = torch.arange(-radius, radius + 1, dtype=torch.float64)
            k = torch.exp(-t * t / (2 * self.sigma ** 2))
        else:
            k = None
        if k is not None:
            k = k / k.sum()
            self.register_buffer("kernel", k.float(), persistent=False)
            self._taps = tuple(float(v) for v in k)  # the same weights as Python floats, for forward
        else:
            self.kernel = None
            self._taps = ()

    def extra_repr(self) -> str:
        """The filter (kernel or sigma) and the noise level, shown in the module's repr."""
        if self.kernel_size is not None:
            return f"kernel={self.kernel_size}, noise={self.noise}"
        return f"sigma={self.sigma}, noise={self.noise}"

    def forward(self, x: Tensor) -> Tensor:
        """Add noise (fresh from torch's global generator on every call, in train and
        eval mode alike), low-pass filter each channel, clamp to [0, 1].

        Args:
            x: images [B, C, H, W], floating point.

        Returns:
            The preprocessed images, shaped as ``x``. The filter pads by reflection, or
            by replication for planes no larger than the filter's radius.

        Raises:
            ValueError: ``x`` is not 4-d.
        """
        if x.dim() != 4:
            raise ValueError(f"LowPassNoise: the input must have shape [B, C, H, W], got {tuple(x.shape)}")
        if self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        if self._taps:
            r = len(self._taps) // 2
            h, w = x.shape[2:]
            x = F.pad(x, (r, r, r, r), mode="reflect" if min(h, w) > r else "replicate")
            # The separable filter as weighted sums of shifted views, along the rows and
            # then the columns: per channel, so no grouped convolution (which oneDNN runs
            # several times slower than these elementwise passes for 1-3 channels).
            x = _shifted_sum(x, self._taps, 3, w)
            x = _shifted_sum(x, self._taps, 2, h)
        return x.clamp(0, 1)


class DenoisingAutoencoder(nn.Module):
    """The denoising autoencoder of the committee paper: 784-1000-500-250-30-250-500-
    1000-784 (``sizes``: the encoder's widths from the input), sigmoid between the
    layers and at the output (images in [0, 1]), the code layer linear. Takes
    [B, C, H, W] images with C H W = sizes[0] and returns the same shape.

    Trained end to end from random weights (train_denoiser, Adam), the default deep
    sigmoid stack can stay at the mean image: on the 28x28 digits its loss did not
    drop below the pixel variance in 30 epochs (the deep autoencoders of the
    literature are pretrained layer by layer). A shallower stack, e.g.
    ``sizes=(784, 500, 30)``, trains directly; the committee experiment uses one.

    Args:
        sizes: the encoder's widths, from the input to the code: at least 2 positive
            ints (default (784, 1000, 500, 250, 30)); the decoder mirrors them.

    Shape:
        input: [B, ...] with sizes[0] values per sample (e.g. [B, 1, 28, 28]), floating
        point; output: the same shape, values in (0, 1).

    Raises:
        ValueError: fewer than 2 sizes, or one that is not a positive int.
    """

    def __init__(self, sizes: Sequence[int] = (784, 1000, 500, 250, 30)):
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2 or any(not (isinstance(s, int) and s >= 1) for s in sizes):
            raise ValueError(f"DenoisingAutoencoder: argument 'sizes' must be >= 2 positive ints, got {sizes}")
        enc, dec = [], []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            enc.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                enc.append(nn.Sigmoid())
        rev = sizes[::-1]
        for a, b in zip(rev, rev[1:]):
            dec += [nn.Linear(a, b), nn.Sigmoid()]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.sizes = sizes

    def forward(self, x: Tensor) -> Tensor:
        """Encode and decode ``x``.

        Args:
            x: a batch [B, ...] with ``sizes[0]`` values per sample.

        Returns:
            The reconstruction, shaped as ``x``.

        Raises:
            ValueError: a sample of ``x`` does not have ``sizes[0]`` values.
        """
        if x[0].numel() != self.sizes[0]:
            raise ValueError(f"DenoisingAutoencoder: the input has {x[0].numel()} values per sample, expected "
                             f"{self.sizes[0]}")
        return self.decoder(self.encoder(x.flatten(1))).view_as(x)


def train_denoiser(dae: nn.Module, loader: Iterable[Batch], optimizer: torch.optim.Optimizer, epochs: int = 1,
                   input_dropout: float = 0.2, device=None, progress: Optional[bool] = None) -> List[float]:
    """Train the autoencoder to reconstruct clean images from images whose pixels
    were dropped (set to 0) with probability ``input_dropout``: mean squared error.
    Returns the mean loss of every epoch."""
    if not 0 <= input_dropout < 1:
        raise ValueError(f"robustops.defences.train_denoiser: 'input_dropout' must be in [0, 1), got {input_dropout}")

    def loss(m, x, y):
        keep = (torch.rand_like(x) >= input_dropout).to(x.dtype)
        return F.mse_loss(m(x * keep), x)

    return fit(dae, loader, optimizer, epochs, loss=loss, device=device, progress=progress)


class Preprocessed(nn.Module):
    """A preprocessing defence in front of a classifier: ``model(preprocess(x))``, as
    one module to evaluate and attack (the attacks differentiate through both).

    Args:
        preprocess: the preprocessing module (LowPassNoise, a DenoisingAutoencoder).
        model: the classifier.
    """

    def __init__(self, preprocess: nn.Module, model: nn.Module):
        super().__init__()
        self.preprocess, self.model = preprocess, model

    def forward(self, x: Tensor) -> Tensor:
        """``model(preprocess(x))``.

        Args:
            x: the input batch, as ``preprocess`` takes it.

        Returns:
            The classifier's output.
        """
        return self.model(self.preprocess(x))


def mean_training_batch(x: Tensor, y: Tensor, mean: Tensor, n_nonsense: int, noise: float = 0.1,
                        nonsense_label: int = -1, generator: Optional[torch.Generator] = None) -> Batch:
    """The SAF paper's mean training: the batch plus ``n_nonsense`` noisy copies of the
    training mean image (mean + noise * N(0, 1), clamped to [0, 1]) labelled
    ``nonsense_label`` (the index of the extra "nonsense" output the model must then
    have; e.g. 10 for a 10-class model with 11 outputs)."""
    fn = "robustops.defences.mean_training_batch"
    check_floating(fn, "x", x)
    check_label_shape(fn, y, x.shape[0] if x.dim() else None)  # type, dtype, shape: no device sync
    n_nonsense = check_int(fn, "n_nonsense", n_nonsense, 0)
    nonsense_label = check_int(fn, "nonsense_label", nonsense_label)
    if mean.shape != x.shape[1:]:
        raise ValueError(f"robustops.defences.mean_training_batch: 'mean' must have shape {tuple(x.shape[1:])}, "
                         f"got {tuple(mean.shape)}")
    if nonsense_label < 0:
        raise ValueError("robustops.defences.mean_training_batch: argument 'nonsense_label' must be the index of the "
                         f"extra nonsense output, got {nonsense_label}")
    fake = mean.expand((n_nonsense,) + tuple(mean.shape))
    fake = (fake + noise * torch.randn(fake.shape, generator=generator, dtype=x.dtype, device=x.device)).clamp(0, 1)
    labels = torch.full((n_nonsense,), nonsense_label, dtype=y.dtype, device=y.device)
    return torch.cat([x, fake]), torch.cat([y, labels])


def random_training_batch(x: Tensor, y: Tensor, delta: float = 0.1, fraction: float = 0.5,
                          generator: Optional[torch.Generator] = None) -> Batch:
    """The SAF paper's random training: uniform noise in [-delta, delta] added to a
    random ``fraction`` of the batch (clamped to [0, 1]); labels unchanged."""
    if not 0 <= fraction <= 1 or delta < 0:
        raise ValueError(f"robustops.defences.random_training_batch: needs delta >= 0 and fraction in [0, 1], got "
                         f"{delta}, {fraction}")
    pick = torch.rand(x.shape[0], generator=generator, device=x.device) < fraction
    noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) * 2 - 1) * delta
    view = (-1,) + (1,) * (x.dim() - 1)
    return (x + noise * pick.view(view).to(x.dtype)).clamp(0, 1), y
