"""Adversarial attacks for evaluating robustness: batched, for any model, on inputs in
[0, 1], with a call convention close to torchattacks'::

    attack = robustops.attacks.FGSM(model, eps=0.1)
    x_adv = attack(x, y)              # the adversarial batch
    result = attack.evaluate(x, y)    # x_adv, success per sample, success rate, ...

Every attack puts the model (all its submodules) in eval mode while it runs and
restores each submodule's mode afterwards, never writes to the caller's input, and
leaves the parameters and their ``.grad`` untouched (gradients are taken with respect
to the input only).

Attacks
    FGSM            fast gradient sign (Goodfellow et al. 2015), untargeted:
                    x + eps sign(grad_x L(f(x), y))
    FGSLineSearch   fast gradient sign with a line search for the smallest eps that
                    flips the label (Rozsa et al. 2016; the BANG paper's FGS)
    FGSMaxL1        the SAF paper's variant (Zhao & Griffin, eq. 10): for each image the
                    gradient of the loss towards each wrong class j, grad_x L(f(x), j);
                    keep the one with the largest L1 norm and step by ``beta`` against
                    its sign (towards that class). ``targets`` restricts the classes it
                    may choose (e.g. all but a nonsense output); with ``targets`` it
                    also runs without labels (``attack(x)``), for nonsense images
    HotCold         hot/cold with one hot class (HC1, Rozsa et al. 2016): the hot class
                    is the closest-scoring wrong class; move along the gradient of
                    z_hot - z_y (raising the hot class, lowering the original one; with
                    ``loss_fn``, of L(f(x), y) - L(f(x), hot)) with a line search for
                    the smallest step that flips the label, pixels kept in [0, 1]
    CommitteeExample  the adversarial committee paper's training example
                    X + eps sign(g(X)) + c g(X + eps sign(g(X))), g = grad_x L
    PGD             projected gradient descent in the L-inf ball (Madry et al. 2018),
                    with a random start: the strong baseline

The loss (``loss_fn(output, target)``, default cross-entropy on logits) should return
per-sample losses [B] (reduction "none"); pass the model's own loss for models whose
outputs are not logits (robustops.nn.HybridLoss(reduction="none") for the RBF nets).

Success (``evaluate``): counted over the samples the model classifies correctly; a
sample succeeds when its adversarial prediction differs from the label. Samples whose
input gradient is all zero cannot be attacked by a gradient-sign step and count as
failures (as the BANG paper counts them); ``AttackResult.zero_gradient`` says which.

Checks: x must be a floating-point tensor [B, ...] in [0, 1] and y an int64 tensor [B]
(TypeError / ValueError naming the argument; only FGSMaxL1 with ``targets`` accepts
y = None). The number of classes K is known only
once the model has run, so the first forward of each call checks that the model's
output is [B, K] and that every label is in [0, K) (a ValueError naming 'y', instead of
a label of -1 silently taken from the end or a raw IndexError); an attack that runs
no forward (PGD with steps=0) checks the range in ``evaluate``'s prediction.

Reentrancy: an attack object holds only its settings. What a call finds (the
zero-gradient mask, FGSMaxL1's target, the line searches' step, HotCold's hot class)
travels in that call's return value, and the pending label check in a context
variable of the running call, so one object may serve interleaved calls: threads, or a
call from inside its own loss_fn or model. The model's train/eval flags are the
model's own: threads sharing a model that is in train mode race on them (put it in
eval mode first).
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops._checks import check_floating, check_int, check_label_shape, check_labels

__all__ = ["Attack", "AttackResult", "FGSM", "FGSLineSearch", "FGSMaxL1", "HotCold", "CommitteeExample", "PGD",
           "eval_mode"]

Loss = Callable[[Tensor, Tensor], Tensor]
# What one call of an attack found: "zero_gradient" (a bool tensor [B], or None when the
# attack took no gradient) and the per-sample tensors that evaluate reports in
# AttackResult.extra under the same keys.
Info = Dict[str, Optional[Tensor]]


class _Call:
    """One running call of an attack: the labels its first forward still has to check
    against the model's number of classes (None once checked, or for none)."""

    __slots__ = ("attack", "labels")

    def __init__(self, attack: "Attack", labels: Optional[Tensor]):
        self.attack, self.labels = attack, labels


# The innermost running call of this thread (or task): set and reset around each call,
# so a nested call (from a loss_fn or a model) has its own and the outer one's comes back.
_CALL: ContextVar[Optional[_Call]] = ContextVar("robustops_attacks_call", default=None)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """A context manager that puts every submodule of ``model`` in eval mode inside
    and restores each one's own train/eval flag after (on an exception too), so a
    model with mixed modes gets them back as they were::

        with eval_mode(model):
            logits = model(x)

    Args:
        model: the model.

    Yields:
        The model.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _per_sample_loss(loss_fn: Loss, out: Tensor, target: Tensor) -> Tensor:
    """The sum of the per-sample losses, whose gradient with respect to the batch is
    every sample's own gradient (the samples of a model in eval mode do not
    interact). A loss_fn that returns a scalar is used as it is (a mean then scales
    the gradients by 1 / B: only the sign attacks are indifferent to that)."""
    value = loss_fn(out, target)
    return value.sum() if value.dim() > 0 else value


def _default_loss(out: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(out, target, reduction="none")


@dataclass
class AttackResult:
    """What an attack did to a batch (``Attack.evaluate``'s result); printing it gives a
    summary table. The per-sample flags, norms and ``extra`` are on the CPU; x_adv stays
    on x's device.

    Attributes:
        attack: the attack's class name.
        x_adv: the adversarial batch, shaped as x.
        correct: bool [B], the model classified x correctly.
        success: bool [B], correct, and the adversarial prediction differs from y (a
            zero-gradient sample never succeeds).
        zero_gradient: bool [B], the input gradient was all zero (counted as failure).
        linf: [B], the L-inf norm of x_adv - x per sample.
        l2: [B], the L2 norm of x_adv - x per sample.
        extra: per-sample tensors an attack reports besides ("step", "hot", "target").
    """

    attack: str
    x_adv: Tensor
    correct: Tensor          # the model classified x correctly
    success: Tensor          # correct, and the adversarial prediction differs from y
    zero_gradient: Tensor    # the input gradient was all zero (counted as failure)
    linf: Tensor
    l2: Tensor
    extra: Dict[str, Tensor] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Successes over the correctly classified samples (NaN when there are none)."""
        n = int(self.correct.sum())
        return float(self.success.sum()) / n if n else math.nan

    @property
    def clean_accuracy(self) -> float:
        """The fraction of samples the model classifies correctly on x (NaN for an
        empty batch)."""
        return float(self.correct.float().mean()) if self.correct.numel() else math.nan

    @property
    def adversarial_accuracy(self) -> float:
        """Accuracy on x_adv over all samples (a misclassified x stays an error)."""
        return float((self.correct & ~self.success).float().mean()) if self.correct.numel() else math.nan

    def __str__(self) -> str:
        rows = [("attack", self.attack), ("samples", str(self.correct.numel())),
                ("clean accuracy", f"{self.clean_accuracy:.4f}"),
                ("success rate", f"{self.success_rate:.4f}"),
                ("adversarial accuracy", f"{self.adversarial_accuracy:.4f}"),
                ("zero gradients", str(int(self.zero_gradient.sum()))),
                ("mean L-inf (successes)", _mean_str(self.linf, self.success)),
                ("mean L2 (successes)", _mean_str(self.l2, self.success))]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _mean_str(values: Tensor, mask: Tensor) -> str:
    return f"{float(values[mask].mean()):.4f}" if bool(mask.any()) else "-"


class Attack:
    """The base of the attacks: checks, eval mode, no writes to the input, evaluate().

    ``attack(x, y)`` returns the adversarial batch x_adv (detached, shaped as x, in
    [0, 1]); ``attack.evaluate(x, y)`` runs the attack and scores it. x must be a
    floating-point tensor [B, ...] with values in [0, 1], y int64 labels [B] in [0, K)
    for a model with K outputs (a TypeError or ValueError naming the argument
    otherwise; see the module docstring).

    Subclasses implement ``_perturb(x, y) -> (x_adv, info)`` on a detached copy of x:
    ``info`` is a dict of what the call found, "zero_gradient" (a bool tensor [B], or
    None) and any other entry a per-sample tensor that ``evaluate`` reports in
    ``AttackResult.extra`` under the same key. Nothing of a call is kept on the
    object (see the module docstring's reentrancy).

    Args:
        model: the model under attack, an nn.Module returning [B, K] scores.
        loss_fn: ``loss_fn(output, target)`` returning per-sample losses [B];
            default: cross-entropy on logits (reduction "none").

    Raises:
        TypeError: ``model`` is not an nn.Module.
    """

    def __init__(self, model: nn.Module, loss_fn: Optional[Loss] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}: argument 'model' must be an nn.Module, got "
                            f"{type(model).__name__}")
        self.model = model
        self.loss_fn = loss_fn if loss_fn is not None else _default_loss

    def _check(self, x: Tensor, y: Optional[Tensor], labels_required: bool = True) -> None:
        """The checks that need no forward (the label range waits for it: _forward).
        ``y`` None with ``labels_required`` False: the input alone (an attack that runs
        without labels); with it True, a TypeError naming 'y'."""
        name = type(self).__name__
        check_floating(name, "x", x)
        if x.dim() == 0:
            raise ValueError(f"{name}: argument 'x' must have a batch dimension [B, ...], got a 0-dim tensor")
        if y is not None or labels_required:
            check_label_shape(name, y, batch=x.shape[0])
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError(f"{name}: argument 'x' must hold values in [0, 1] (normalization belongs "
                             f"inside the model), got [{float(x.min()):.3g}, {float(x.max()):.3g}]")

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self._run(x, y)[0]

    @contextlib.contextmanager
    def _calling(self, labels: Optional[Tensor]) -> Iterator[_Call]:
        """This thread's running call of this attack inside, with ``labels`` for its
        first forward to check; the enclosing call (if any) restored after."""
        call = _Call(self, labels)
        token = _CALL.set(call)
        try:
            yield call
        finally:
            _CALL.reset(token)

    def _run(self, x: Tensor, y: Optional[Tensor],
             labels_required: bool = True) -> Tuple[Tensor, Info, Optional[Tensor]]:
        """The checked, eval-mode call of _perturb: (x_adv, info, the labels no forward
        has checked yet: None unless the attack ran no forward)."""
        self._check(x, y, labels_required)
        with self._calling(y) as call, eval_mode(self.model), torch.enable_grad():
            x_adv, info = self._perturb(x.detach().clone(), None if y is None else y.detach())
        return x_adv.detach(), info, call.labels

    def _forward(self, x: Tensor) -> Tensor:
        """model(x); the first forward of a call also checks the output's shape and the
        labels' range against its number of classes (one synchronization per call)."""
        out = self.model(x)
        call = _CALL.get()
        if call is not None and call.attack is self and call.labels is not None:
            y, call.labels = call.labels, None
            self._check_output(out, y.shape[0])
            check_labels(type(self).__name__, y, batch=y.shape[0], num_classes=out.shape[1])
        return out

    def _check_output(self, out, batch: int) -> None:
        """A ValueError unless the model's output is a tensor [batch, classes]."""
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != batch:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{type(self).__name__}: the model's output must have shape [{batch}, classes] (a "
                             f"row of class scores per sample of x), got {got}")

    def _perturb(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        raise NotImplementedError

    def _input_gradient(self, x: Tensor, target: Tensor, sign: float = 1.0) -> Tensor:
        """grad_x of sign * (the summed loss of f(x) against target)."""
        x = x.detach().requires_grad_(True)
        loss = _per_sample_loss(self.loss_fn, self._forward(x), target) * sign
        (g,) = torch.autograd.grad(loss, x)
        return g

    @torch.no_grad()
    def _predict(self, x: Tensor) -> Tensor:
        return self._forward(x).argmax(1)

    def evaluate(self, x: Tensor, y: Tensor) -> AttackResult:
        """Run the attack on (x, y) and score it (see the module docstring).

        Args:
            x: floating-point inputs [B, ...] with values in [0, 1].
            y: int64 labels [B], in [0, K).

        Returns:
            An AttackResult: x_adv, which samples were correct and which attacks
            succeeded (counted over the correctly classified samples), the zero-gradient
            samples, the L-inf and L2 norms of the perturbations, the attack's extras.

        Raises:
            TypeError: ``x`` is not a floating-point tensor, or ``y`` not an int64
                tensor.
            ValueError: ``x`` has values outside [0, 1] or no batch dimension, ``y`` is
                not [B] or holds a label outside [0, K), or the model's output is not
                [B, K].
        """
        x_adv, info, unchecked = self._run(x, y)
        # an attack that ran no forward (PGD with steps=0) has not checked the labels' range yet
        with self._calling(unchecked), eval_mode(self.model):
            correct = self._predict(x) == y
            flipped = self._predict(x_adv) != y
        zero = info["zero_gradient"] if info.get("zero_gradient") is not None else torch.zeros_like(correct)
        return self._result(x, x_adv, correct, correct & flipped & ~zero, zero, info)

    def _result(self, x: Tensor, x_adv: Tensor, correct: Tensor, success: Tensor, zero: Tensor,
                info: Info) -> AttackResult:
        """The AttackResult of one call: the norms of x_adv - x, info's entries but the
        zero-gradient mask as ``extra``, every per-sample tensor on the CPU."""
        delta = (x_adv - x).flatten(1)
        return AttackResult(type(self).__name__, x_adv, correct.cpu(), success.cpu(), zero.cpu(),
                            delta.abs().amax(1).cpu() if delta.shape[1] else delta.new_zeros(len(x)).cpu(),
                            delta.norm(dim=1).cpu(),
                            {k: v.cpu() for k, v in info.items() if k != "zero_gradient"})


def _positive(name: str, cls: str, value: float, allow_zero: bool = True) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{cls}: argument '{name}' must be a finite number {'>=' if allow_zero else '>'} 0, "
                         f"got {value!r}")
    return float(value)


def _all_zero(g: Tensor) -> Tensor:
    return (g.flatten(1) == 0).all(1)


class FGSM(Attack):
    """Fast gradient sign (Goodfellow et al. 2015), untargeted, one step:
    ``clamp(x + eps sign(grad_x L(f(x), y)), 0, 1)``.

    ``attack(x, y)`` returns x_adv (x: floating point [B, ...] in [0, 1], y: int64
    labels [B]); ``attack.evaluate(x, y)`` an AttackResult (see the module docstring
    for the checks and how success is counted).

    Args:
        model: the model under attack (nn.Module returning [B, classes]).
        eps: the step size, a finite number >= 0 (default 8 / 255).
        loss_fn: ``loss_fn(output, target)`` returning per-sample losses [B];
            default: cross-entropy on logits.

    Raises:
        TypeError: ``model`` is not an nn.Module.
        ValueError: ``eps`` is negative or not finite.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, loss_fn: Optional[Loss] = None):
        super().__init__(model, loss_fn)
        self.eps = _positive("eps", "FGSM", eps)

    def _perturb(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        g = self._input_gradient(x, y)
        return (x + self.eps * g.sign()).clamp(0, 1), {"zero_gradient": _all_zero(g)}


class FGSMaxL1(Attack):
    """The SAF paper's fast gradient sign (eq. 10): for every candidate class j the
    gradient g_j = grad_x L(f(x), j); the one with the largest L1 norm is kept, and the
    image steps by ``beta`` against its sign, towards that class: clamp(x - beta
    sign(g_j*)). One backward pass per candidate class, each batched over the samples;
    the chosen class is in ``evaluate(...).extra["target"]``.

    ``targets``: the classes the attack may choose (an iterable of ints or a 1-D
    integer tensor, each in [0, K) for a model with K outputs: a ValueError naming
    'targets' otherwise, the upper bound checked at the first forward). None (the
    default): every class. The true class y is never a candidate, so the candidates
    of a sample are ``targets`` minus y. Order and repeats in ``targets`` do not
    matter: the classes are tried in increasing order and a tie in the L1 norm goes
    to the lowest class, as without ``targets`` (``targets=range(K)`` gives the
    unrestricted attack exactly). A sample left with no candidate (``targets`` is the
    single class y) is a ValueError naming 'targets', not a silent no-op. A typical
    use: all classes but a mean-trained model's nonsense output,
    ``targets=range(K - 1)``.

    Without labels: ``attack(x)`` / ``attack(x, None)`` (``targets`` required, else a
    ValueError naming 'y') makes every class of ``targets`` a candidate, e.g. to push
    nonsense images, which have no true class, towards the most attractive meaningful
    class (robustops.curves.nonsense_samples). ``evaluate(x)`` then has no notion of
    correct or successful: ``correct`` and ``success`` are all False (success rate
    NaN); ``x_adv``, ``zero_gradient``, the norms and ``extra["target"]`` are filled."""

    def __init__(self, model: nn.Module, beta: float = 0.1, loss_fn: Optional[Loss] = None,
                 targets: Optional[Iterable[int]] = None):
        super().__init__(model, loss_fn)
        self.beta = _positive("beta", "FGSMaxL1", beta)
        self.targets = _classes("FGSMaxL1", "targets", targets) if targets is not None else None

    def __call__(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self._run(x, y, labels_required=not self._unlabelled(y))[0]

    def _unlabelled(self, y: Optional[Tensor]) -> bool:
        """Whether the call runs without labels (``y`` None): a ValueError naming 'y'
        unless ``targets`` is given."""
        if y is not None:
            return False
        if self.targets is None:
            raise ValueError("FGSMaxL1: argument 'y' may be None only when 'targets' is given (without labels "
                             "every class of targets is a candidate)")
        return True

    def _candidates(self, classes: int, y: Optional[Tensor]) -> range:
        """The classes to try, in increasing order, checked against the model's K."""
        if self.targets is None:
            return range(classes)
        if self.targets[-1] >= classes:
            raise ValueError(f"FGSMaxL1: argument 'targets' must hold classes in [0, {classes}) (the model has "
                             f"{classes} outputs), got {list(self.targets)}")
        if y is not None and len(self.targets) == 1:
            alone = (y == self.targets[0]).nonzero().flatten()
            if alone.numel():
                i = int(alone[0])
                raise ValueError(f"FGSMaxL1: argument 'targets' leaves sample {i} no class to attack towards: "
                                 f"targets {list(self.targets)} holds only its label {int(y[i])}")
        return self.targets

    def _perturb(self, x: Tensor, y: Optional[Tensor]) -> Tuple[Tensor, Info]:
        with torch.no_grad():
            out = self._forward(x)
        if y is None:
            self._check_output(out, x.shape[0])
        classes = out.shape[1]
        best = torch.full((x.shape[0],), -1.0, dtype=torch.float64, device=x.device)
        grad = torch.zeros_like(x)
        target = y.clone() if y is not None else torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        for j in self._candidates(classes, y):
            tj = torch.full_like(target, j)
            g = self._input_gradient(x, tj)
            norm = g.flatten(1).abs().sum(1).double()
            if y is not None:
                norm = torch.where(y == j, torch.full_like(norm, -1.0), norm)   # wrong classes only
            better = norm > best
            best = torch.where(better, norm, best)
            grad = torch.where(better.view((-1,) + (1,) * (x.dim() - 1)), g, grad)
            target = torch.where(better, tj, target)
        return (x - self.beta * grad.sign()).clamp(0, 1), {"zero_gradient": best <= 0, "target": target}

    def evaluate(self, x: Tensor, y: Optional[Tensor] = None) -> AttackResult:
        """As Attack.evaluate; without labels (``y`` None, ``targets`` given) no sample
        counts as correct or successful (see the class docstring)."""
        if not self._unlabelled(y):
            return super().evaluate(x, y)
        x_adv, info, _ = self._run(x, None, labels_required=False)
        none = torch.zeros(x.shape[0], dtype=torch.bool)
        return self._result(x, x_adv, none, none.clone(), info["zero_gradient"], info)


def _classes(fn: str, name: str, values) -> tuple:
    """``values`` (an iterable of ints or a 1-D integer tensor) as a sorted tuple of
    distinct class indices >= 0: a TypeError for a non-integer, a ValueError for a
    negative one or none at all (the upper bound waits for the model's output)."""
    if isinstance(values, Tensor):
        if values.dim() != 1 or values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{fn}: argument '{name}' must be a 1-D integer tensor or an iterable of ints, got a "
                            f"{values.dtype} tensor of shape {list(values.shape)}")
        values = values.tolist()
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{fn}: argument '{name}' must be an iterable of ints, got {type(values).__name__}")
    values = [check_int(fn, name, v) for v in values]
    if not values:
        raise ValueError(f"{fn}: argument '{name}' must hold at least one class, got none")
    if min(values) < 0:
        raise ValueError(f"{fn}: argument '{name}' must hold classes >= 0, got {values}")
    return tuple(sorted(set(values)))


class _LineSearch(Attack):
    """An attack along one direction d per image (``_direction``), with a line search
    for the smallest step s in (0, ``max_step``] for which clamp(x + s d, 0, 1) is no
    longer classified y: a grid of ``grid`` steps, then ``refine`` bisections between
    the last step that did not flip and the first that did. Images that no step flips
    are failures and are returned unchanged; ``evaluate(...).extra["step"]`` has the
    steps (0 on failure)."""

    def __init__(self, model: nn.Module, max_step: float = 1.0, grid: int = 32, refine: int = 10,
                 loss_fn: Optional[Loss] = None):
        super().__init__(model, loss_fn)
        name = type(self).__name__
        self.max_step = _positive("max_step", name, max_step, allow_zero=False)
        if not (isinstance(grid, int) and grid >= 1 and isinstance(refine, int) and refine >= 0):
            raise ValueError(f"{name}: 'grid' must be an int >= 1 and 'refine' an int >= 0, got {grid}, {refine}")
        self.grid, self.refine = grid, refine

    def _direction(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        """(the direction d per image, info): info's "zero_gradient" marks the images
        not to search (failures); its other entries go to ``_perturb``'s info."""
        raise NotImplementedError

    def _flips(self, x: Tensor, d: Tensor, step: Tensor, y: Tensor) -> Tensor:
        view = (-1,) + (1,) * (x.dim() - 1)
        return self._predict((x + step.view(view) * d).clamp(0, 1)) != y

    def _perturb(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        d, info = self._direction(x, y)
        zero = info.pop("zero_gradient")
        n = x.shape[0]
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        hi = torch.zeros(n, dtype=x.dtype, device=x.device)
        lo = torch.zeros_like(hi)
        for k in range(1, self.grid + 1):
            s = torch.full_like(hi, self.max_step * k / self.grid)
            flips = self._flips(x, d, s, y) & ~found & ~zero
            hi = torch.where(flips, s, hi)
            lo = torch.where(flips, s - self.max_step / self.grid, lo)
            found |= flips
            if bool(found.all()):
                break
        for _ in range(self.refine):
            mid = (lo + hi) / 2
            flips = self._flips(x, d, mid, y)
            hi = torch.where(found & flips, mid, hi)
            lo = torch.where(found & ~flips, mid, lo)
        step = torch.where(found, hi, torch.zeros_like(hi))
        x_adv = (x + step.view((-1,) + (1,) * (x.dim() - 1)) * d).clamp(0, 1)
        return x_adv, {"zero_gradient": zero, "step": step, **info}


class FGSLineSearch(_LineSearch):
    """Fast gradient sign with the smallest flipping step (the FGS of Rozsa et al.
    2016, as the BANG paper evaluates it): the direction sign(grad_x L(f(x), y)) and
    the line search for the smallest eps in (0, ``max_step``] that changes the label.
    The success rate counts the images some eps flips; ``evaluate(...).extra["step"]``
    is each image's eps (0 on failure), which equals its L-inf perturbation unless
    clamping to [0, 1] cut it."""

    def _direction(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        g = self._input_gradient(x, y)
        return g.sign(), {"zero_gradient": _all_zero(g)}


class HotCold(_LineSearch):
    """Hot/cold with one hot class (HC1, Rozsa et al. 2016). The hot class is the
    closest-scoring wrong class (the largest wrong logit); the direction d = grad_x
    (z_hot - z_y), normalized to unit L-inf norm, raises the hot class and lowers the
    original one. A line search finds, per image, the smallest step s in (0,
    ``max_step``] for which clamp(x + s d, 0, 1) is no longer classified y: a grid of
    ``grid`` steps, then ``refine`` bisections between the last step that did not flip
    and the first that did. Images that no step flips are failures and are returned
    unchanged. ``evaluate(...).extra`` has the "step" (0 on failure) and "hot" class.

    ``loss_fn`` (per-sample losses ``loss_fn(output, target)``, as for the other
    attacks): the direction becomes the gradient of L(f(x), y) - L(f(x), hot), the
    loss of the original class raised and that of the hot class lowered, normalized
    the same way; the hot class is still the largest wrong output (the attack's
    prediction is the argmax). For cross-entropy on logits this is the same
    objective, CE(z, y) - CE(z, hot) = z_hot - z_y (the log-sum-exp cancels), up to
    rounding; a model whose outputs are not logits (robustops.nn.HybridLoss for the
    RBF nets) passes its own loss. None (the default) takes the gradient of
    z_hot - z_y itself, as without ``loss_fn``."""

    def __init__(self, model: nn.Module, max_step: float = 1.0, grid: int = 32, refine: int = 10,
                 loss_fn: Optional[Loss] = None):
        super().__init__(model, max_step, grid, refine, loss_fn)

    def _direction(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        xg = x.detach().requires_grad_(True)
        z = self._forward(xg)
        wrong = z.detach().clone()
        wrong.scatter_(1, y[:, None], -math.inf)
        hot = wrong.argmax(1)
        if self.loss_fn is _default_loss:
            objective = (z.gather(1, hot[:, None]) - z.gather(1, y[:, None])).sum()
        else:
            objective = _per_sample_loss(self.loss_fn, z, y) - _per_sample_loss(self.loss_fn, z, hot)
        (g,) = torch.autograd.grad(objective, xg)
        scale = g.flatten(1).abs().amax(1)
        d = g / scale.clamp_min(torch.finfo(g.dtype).tiny).view((-1,) + (1,) * (x.dim() - 1))
        return d, {"zero_gradient": scale == 0, "hot": hot}


class CommitteeExample(Attack):
    """The adversarial committee paper's training example:
    X + eps sign(g(X)) + c g(X + eps sign(g(X))), g = grad_x L(f(.), y), clamped to
    [0, 1] (the intermediate point too)."""

    def __init__(self, model: nn.Module, eps: float = 0.1, c: float = 1.0, loss_fn: Optional[Loss] = None):
        super().__init__(model, loss_fn)
        self.eps = _positive("eps", "CommitteeExample", eps)
        self.c = _positive("c", "CommitteeExample", c)

    def _perturb(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        g = self._input_gradient(x, y)
        x1 = (x + self.eps * g.sign()).clamp(0, 1)
        return (x1 + self.c * self._input_gradient(x1, y)).clamp(0, 1), {"zero_gradient": _all_zero(g)}


class PGD(Attack):
    """Projected gradient descent in the L-inf ball of radius ``eps``: from a uniform
    random start in the ball (``random_start``, seeded by ``seed``), ``steps`` steps of
    x + alpha sign(grad_x L), each projected onto the ball and [0, 1]."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
                 random_start: bool = True, seed: Optional[int] = 0, loss_fn: Optional[Loss] = None):
        super().__init__(model, loss_fn)
        self.eps = _positive("eps", "PGD", eps)
        self.alpha = _positive("alpha", "PGD", alpha)
        if not (isinstance(steps, int) and steps >= 0):
            raise ValueError(f"PGD: argument 'steps' must be an int >= 0, got {steps!r}")
        self.steps, self.random_start, self.seed = steps, random_start, seed

    def _perturb(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Info]:
        x_adv = x
        if self.random_start:
            gen = torch.Generator(device=x.device)
            if self.seed is not None:
                gen.manual_seed(self.seed)
            else:
                gen.seed()
            noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            x_adv = (x + (2 * noise - 1) * self.eps).clamp(0, 1)
        zero = None
        for _ in range(self.steps):
            g = self._input_gradient(x_adv, y)
            zero = _all_zero(g) if zero is None else zero
            x_adv = x_adv + self.alpha * g.sign()
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)
        return x_adv, {"zero_gradient": zero}
