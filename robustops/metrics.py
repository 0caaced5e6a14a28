"""Metrics for adversarial examples: how far an adversarial image is from its original,
how similar it looks, and how often an attack succeeds::

    from robustops import metrics
    norms = metrics.perturbation_norms(x, x_adv)   # {"linf", "l2", "l1"}, one value per image
    dist = metrics.mean_abs_distortion(x, x_adv)   # ||x_adv - x||_1 / (C H W)
    db = metrics.psnr(x, x_adv)                    # 10 log10(1 / MSE), inf for identical images
    pass_ = metrics.pass_score(x, x_adv)           # SSIM after ECC alignment (PASS)
    rate = metrics.success_rate(success, mask=correct)

Images are floating-point tensors [B, C, H, W] (a batch) or [C, H, W] (one image) with
values in [0, 1], on any device. Every per-image metric returns a float64 CPU tensor:
[B] for a batch, 0-dim for one image. The two images of a pair must have the same
shape and device (ValueError / TypeError naming the arguments otherwise); values are
used as given, not clipped to [0, 1]. Nothing here records gradients.

Metrics::

    perturbation_norms   L-inf, L2 and L1 norms of x_adv - x, per image
    mean_abs_distortion  "dist" of the adversarial committee paper: the mean absolute
                         difference per pixel, ||x_adv - x||_1 / (C H W)
    psnr                 peak signal-to-noise ratio, 10 log10(data_range^2 / MSE)
    ssim                 SSIM (scikit-image, Wang et al.'s 11x11 Gaussian window), no
                         alignment
    ecc_align            aligns one image to another with an ECC homography (OpenCV)
    pass_score           PASS (Rozsa, Rudd & Boult 2016, "Adversarial Diversity and Hard
                         Positive Generation"): SSIM between the original and the
                         adversarial image aligned to it
    success_rate         the fraction of successes among selected samples

``ssim``, ``ecc_align`` and ``pass_score`` need the optional extra
``pip install 'robustops[metrics]'`` (OpenCV and scikit-image), imported when called.
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, NamedTuple, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "perturbation_norms",
    "mean_abs_distortion",
    "psnr",
    "ssim",
    "ecc_align",
    "ECCAlignment",
    "pass_score",
    "success_rate",
]

# ITU-R BT.601 luminance weights (R, G, B), those of OpenCV's RGB -> gray conversion.
_LUMA = (0.299, 0.587, 0.114)

# SSIM's window: Wang et al.'s (2004) 11x11 circular-symmetric Gaussian, sigma 1.5.
# scikit-image's structural_similarity with gaussian_weights=True truncates its
# Gaussian at 3.5 sigma: a radius of int(3.5 * 1.5 + 0.5) = 5, so 11 taps, and it
# refuses images smaller than that window in either dimension.
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # scikit-image's, fixed when gaussian_weights=True
_SSIM_MIN_SIZE = 2 * int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5) + 1  # 11


# ---------------------------------------------------------------------------------
# argument checks and conversions


def _check_pair(fn: str, a: Tensor, b: Tensor, names: Tuple[str, str]) -> Tuple[Tensor, Tensor, bool]:
    """Checks a pair of images and returns them as [B, C, H, W] (a view) and whether
    they were a batch."""
    for name, t in zip(names, (a, b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: argument '{name}' must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: argument '{name}' must be a floating-point tensor, got {t.dtype}")
        if t.dim() not in (3, 4) or 0 in t.shape[-3:]:
            raise ValueError(
                f"{fn}: argument '{name}' must have shape [B, C, H, W] or [C, H, W] with C, H, W >= 1, "
                f"got {tuple(t.shape)}"
            )
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: arguments '{names[0]}' and '{names[1]}' must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(
            f"{fn}: arguments '{names[0]}' and '{names[1]}' must be on the same device, "
            f"got {a.device} and {b.device}"
        )
    batched = a.dim() == 4
    return (a, b, True) if batched else (a[None], b[None], False)


def _check_ssim_size(fn: str, shape: torch.Size, names: Tuple[str, str]) -> None:
    if min(shape[-2:]) < _SSIM_MIN_SIZE:
        raise ValueError(
            f"{fn}: arguments '{names[0]}' and '{names[1]}' must be at least "
            f"{_SSIM_MIN_SIZE}x{_SSIM_MIN_SIZE} for SSIM (its {_SSIM_MIN_SIZE}x{_SSIM_MIN_SIZE} Gaussian "
            f"window), got {shape[-2]}x{shape[-1]}"
        )


def _per_image(values: Tensor, batched: bool) -> Tensor:
    """[B] float64 CPU for a batch, 0-dim for one image."""
    values = values.to(device="cpu", dtype=torch.float64)
    return values if batched else values[0]


def _numpy64(t: Tensor) -> np.ndarray:
    """A float64 NumPy copy of a tensor on any device."""
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _difference(x: Tensor, x_adv: Tensor) -> Tensor:
    """x_adv - x in float64, flattened per image: [B, C H W]."""
    return (x_adv.detach().to(torch.float64) - x.detach().to(torch.float64)).flatten(1)


def _import_cv2(fn: str, needs: str):
    try:
        import cv2
    except ImportError as err:
        raise ImportError(f"robustops.metrics.{fn} needs {needs}: pip install 'robustops[metrics]'") from err
    return cv2


def _import_ssim(fn: str, needs: str):
    try:
        from skimage.metrics import structural_similarity
    except ImportError as err:
        raise ImportError(f"robustops.metrics.{fn} needs {needs}: pip install 'robustops[metrics]'") from err
    return structural_similarity


# ---------------------------------------------------------------------------------
# distances


def perturbation_norms(x: Tensor, x_adv: Tensor) -> Dict[str, Tensor]:
    """The L-inf, L2 and L1 norms of the perturbation x_adv - x, per image.

    Computed in float64 over all C x H x W values of each image.

    Args:
        x: the original images, [B, C, H, W] or [C, H, W].
        x_adv: the adversarial images, same shape and device as ``x``.

    Returns:
        ``{"linf": max |d|, "l2": sqrt(sum d^2), "l1": sum |d|}`` with d = x_adv - x,
        each a float64 CPU tensor [B] (0-dim for [C, H, W] inputs).
    """
    x, x_adv, batched = _check_pair("perturbation_norms", x, x_adv, ("x", "x_adv"))
    d = _difference(x, x_adv).abs()
    return {
        "linf": _per_image(d.amax(dim=1), batched),
        "l2": _per_image(torch.linalg.vector_norm(d, ord=2, dim=1), batched),
        "l1": _per_image(d.sum(dim=1), batched),
    }


def mean_abs_distortion(x: Tensor, x_adv: Tensor) -> Tensor:
    """The mean absolute difference per pixel value, ||x_adv - x||_1 / (C H W), per
    image: the "dist" measure of the adversarial committee paper.

    Args:
        x: the original images, [B, C, H, W] or [C, H, W].
        x_adv: the adversarial images, same shape and device as ``x``.

    Returns:
        A float64 CPU tensor [B] (0-dim for [C, H, W] inputs).
    """
    x, x_adv, batched = _check_pair("mean_abs_distortion", x, x_adv, ("x", "x_adv"))
    return _per_image(_difference(x, x_adv).abs().mean(dim=1), batched)


def psnr(x: Tensor, x_adv: Tensor, data_range: float = 1.0) -> Tensor:
    """The peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), per image,
    with MSE the mean of (x_adv - x)^2 over the C x H x W values (float64).

    Identical images (MSE = 0) give +inf.

    Args:
        x: the original images, [B, C, H, W] or [C, H, W].
        x_adv: the adversarial images, same shape and device as ``x``.
        data_range: the range of the pixel values (1 for images in [0, 1]); > 0.

    Returns:
        A float64 CPU tensor [B] (0-dim for [C, H, W] inputs).
    """
    if not (isinstance(data_range, numbers.Real) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"psnr: argument 'data_range' must be a finite number > 0, got {data_range!r}")
    x, x_adv, batched = _check_pair("psnr", x, x_adv, ("x", "x_adv"))
    mse = _difference(x, x_adv).square().mean(dim=1)
    return _per_image(10.0 * torch.log10(float(data_range) ** 2 / mse), batched)


# ---------------------------------------------------------------------------------
# SSIM, ECC alignment and PASS


def _ssim_image(structural_similarity, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two float64 images [C, H, W] (H, W >= 11) in [0, 1]: scikit-image's
    structural_similarity as Wang et al. define it (11x11 Gaussian window, sigma 1.5,
    population covariances), averaged over channels for C > 1."""
    kwargs = dict(gaussian_weights=True, sigma=_SSIM_SIGMA, use_sample_covariance=False, data_range=1.0)
    if a.shape[0] == 1:
        return float(structural_similarity(a[0], b[0], **kwargs))
    return float(structural_similarity(a, b, channel_axis=0, **kwargs))


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """The structural similarity (SSIM) of two images, per image, without alignment.

    The SSIM of Wang, Bovik, Sheikh & Simoncelli (2004), the one PASS uses: scikit-
    image's ``structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0)``, i.e. local statistics under an
    11x11 circular-symmetric Gaussian window with sigma 1.5 (scikit-image truncates
    it at 3.5 sigma), population (not sample) covariances, K1 = 0.01, K2 = 0.03, the
    mean of the SSIM map over the pixels at least 5 from the border; on each channel
    and averaged over the channels for C > 1 (``channel_axis=0``). Images must be at
    least 11x11 (ValueError otherwise). Computed in float64.

    Changed: earlier versions used scikit-image's defaults (a uniform 7x7 window and
    sample covariances, and smaller windows for images under 7x7, down to 3x3), so
    every SSIM and PASS value differs from theirs; scores computed before the change
    are not comparable with scores computed after it.

    Args:
        x, y: images, [B, C, H, W] or [C, H, W], same shape and device, H and W >= 11.

    Returns:
        A float64 CPU tensor [B] (0-dim for [C, H, W] inputs); 1 for identical images.
    """
    x, y, batched = _check_pair("ssim", x, y, ("x", "y"))
    _check_ssim_size("ssim", x.shape, ("x", "y"))
    structural_similarity = _import_ssim("ssim", "scikit-image")
    a, b = _numpy64(x), _numpy64(y)
    values = torch.tensor([_ssim_image(structural_similarity, a[i], b[i]) for i in range(a.shape[0])],
                          dtype=torch.float64)
    return _per_image(values, batched)


class ECCAlignment(NamedTuple):
    """What :func:`ecc_align` returns (for [C, H, W] inputs, without the batch axis).

    Attributes:
        aligned: the adversarial images warped onto the originals, float64 CPU
            [B, C, H, W]; where ECC failed, the adversarial image unchanged.
        homography: float64 CPU [B, 3, 3], the warp W found by ECC, which maps a pixel
            (x, y, 1) of the original to the point of the adversarial image that lands
            there: aligned(p) = adversarial(W p) (so an adversarial image whose content
            is moved by dx columns and dy rows gives W[0, 2] = dx, W[1, 2] = dy); the
            identity where ECC failed.
        fell_back: bool CPU [B], True where ECC failed (OpenCV raised, or returned a
            non-finite warp) and the image was left unaligned.
    """

    aligned: Tensor
    homography: Tensor
    fell_back: Tensor


def _gray(img: np.ndarray) -> np.ndarray:
    """The single channel ECC runs on, float32 [H, W]: the channel itself for C = 1,
    the luminance 0.299 R + 0.587 G + 0.114 B for C = 3."""
    if img.shape[0] == 1:
        return img[0].astype(np.float32)
    return (_LUMA[0] * img[0] + _LUMA[1] * img[1] + _LUMA[2] * img[2]).astype(np.float32)


def _ecc_image(cv2, original: np.ndarray, adversarial: np.ndarray, criteria, gauss_filt_size: int):
    """Aligns one float64 image [C, H, W] to another; returns (aligned, W, fell_back)."""
    eye = np.eye(3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(
            _gray(original), _gray(adversarial), eye.copy(), cv2.MOTION_HOMOGRAPHY, criteria, None,
            int(gauss_filt_size),
        )
    except cv2.error:
        return adversarial, eye.astype(np.float64), True
    if not np.isfinite(warp).all():
        return adversarial, eye.astype(np.float64), True
    h, w = original.shape[-2:]
    # warpPerspective takes [H, W] or [H, W, C]; WARP_INVERSE_MAP: dst(p) = src(W p).
    src = adversarial[0] if adversarial.shape[0] == 1 else np.ascontiguousarray(adversarial.transpose(1, 2, 0))
    out = cv2.warpPerspective(src, warp, (w, h), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
    aligned = out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
    return aligned, warp.astype(np.float64), False


def _check_ecc_args(fn: str, channels: int, names: Tuple[str, str], max_iterations, epsilon,
                    gauss_filt_size) -> None:
    if channels not in (1, 3):
        raise ValueError(
            f"{fn}: ECC alignment needs 1-channel or 3-channel (RGB) images in arguments "
            f"'{names[0]}' and '{names[1]}', got {channels} channels"
        )
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, numbers.Integral) or max_iterations < 1:
        raise ValueError(f"{fn}: argument 'max_iterations' must be an integer >= 1, got {max_iterations!r}")
    if not (isinstance(epsilon, numbers.Real) and math.isfinite(epsilon)):
        raise ValueError(f"{fn}: argument 'epsilon' must be a finite number, got {epsilon!r}")
    if (isinstance(gauss_filt_size, bool) or not isinstance(gauss_filt_size, numbers.Integral)
            or gauss_filt_size < 1 or gauss_filt_size % 2 == 0):
        raise ValueError(f"{fn}: argument 'gauss_filt_size' must be an odd integer >= 1, got {gauss_filt_size!r}")


def _ecc_batch(cv2, original: np.ndarray, adversarial: np.ndarray, max_iterations: int, epsilon: float,
               gauss_filt_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(max_iterations), float(epsilon))
    results = [_ecc_image(cv2, original[i], adversarial[i], criteria, gauss_filt_size)
               for i in range(original.shape[0])]
    aligned = np.stack([r[0] for r in results]) if results else adversarial.copy()
    warps = np.stack([r[1] for r in results]) if results else np.zeros((0, 3, 3))
    fell_back = np.array([r[2] for r in results], dtype=bool)
    return aligned, warps, fell_back


def ecc_align(original: Tensor, adversarial: Tensor, max_iterations: int = 100, epsilon: float = 1e-6,
              gauss_filt_size: int = 5) -> ECCAlignment:
    """Aligns each adversarial image to its original with a homography found by ECC
    (enhanced correlation coefficient maximization, OpenCV), the alignment of PASS.

    For each image: ``cv2.findTransformECC(original, adversarial, eye(3, float32),
    cv2.MOTION_HOMOGRAPHY, (COUNT | EPS, max_iterations, epsilon), None,
    gauss_filt_size)`` on float32 grayscale versions (the channel itself, or the
    luminance 0.299 R + 0.587 G + 0.114 B of an RGB image), then every channel of the
    adversarial image is warped with ``cv2.warpPerspective(adversarial, warp,
    (width, height), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)`` (bilinear; points
    that fall outside the image read 0). Where ECC fails (OpenCV raises, as it does when it does
    not converge or an image is constant, or the warp is not finite), the image is
    left unaligned with the identity warp and reported in ``fell_back``.

    ECC is a local optimizer started at the identity: it undoes shifts of a pixel or
    two on smooth images (to within 0.1 pixel at the image centre on 32x32 test
    images), but features narrower than the shift can send it to a spurious warp
    that it reports as converged.

    Args:
        original: the template images, [B, C, H, W] or [C, H, W], C = 1 or 3 (RGB).
        adversarial: the images to align, same shape and device as ``original``.
        max_iterations: ECC's iteration limit (>= 1).
        epsilon: ECC stops when the correlation coefficient rises by less than this
            between two iterations (a negative value leaves only the iteration limit).
        gauss_filt_size: the size of the Gaussian blur ECC applies to both images
            first (odd; 1 is no blur; 5 is OpenCV's default).

    Returns:
        An :class:`ECCAlignment` (aligned, homography, fell_back), float64 / bool CPU
        tensors.
    """
    fn, names = "ecc_align", ("original", "adversarial")
    original, adversarial, batched = _check_pair(fn, original, adversarial, names)
    _check_ecc_args(fn, original.shape[1], names, max_iterations, epsilon, gauss_filt_size)
    cv2 = _import_cv2(fn, "OpenCV")
    aligned, warps, fell_back = _ecc_batch(cv2, _numpy64(original), _numpy64(adversarial), max_iterations,
                                           epsilon, gauss_filt_size)
    result = ECCAlignment(torch.from_numpy(aligned), torch.from_numpy(warps), torch.from_numpy(fell_back))
    return result if batched else ECCAlignment(*(t[0] for t in result))


def pass_score(x: Tensor, x_adv: Tensor, align: bool = True, max_iterations: int = 100, epsilon: float = 1e-6,
               gauss_filt_size: int = 5,
               return_aligned: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    """PASS, the perceptual adversarial similarity score (Rozsa, Rudd & Boult 2016,
    "Adversarial Diversity and Hard Positive Generation"), per image: the SSIM between
    the original and the adversarial image after aligning the adversarial image to the
    original with an ECC homography.

    PASS(x_adv, x) = SSIM(psi(x_adv, x), x), with psi the alignment of
    :func:`ecc_align` and SSIM that of :func:`ssim`: Wang et al.'s SSIM, as Rozsa et
    al. use it (data range 1, an 11x11 Gaussian window with sigma 1.5, population
    covariances, averaged over the channels). This changed: earlier versions used
    scikit-image's default uniform 7x7 window, so every PASS value differs from
    theirs (typically by a few hundredths; the two are not comparable), and images
    must now be at least 11x11. Where ECC fails, the unaligned image is
    compared as it is (the alignment is there only to forgive small shifts and
    warps); ``return_aligned`` says which images fell back. 1 for identical images;
    lower is less similar.

    Args:
        x: the original images, [B, C, H, W] or [C, H, W], C = 1 or 3 (RGB) when
            aligning; at least 11x11.
        x_adv: the adversarial images, same shape and device as ``x``.
        align: False skips the alignment (plain SSIM, any number of channels).
        max_iterations, epsilon, gauss_filt_size: ECC's settings (see :func:`ecc_align`).
        return_aligned: also return the images compared and where ECC fell back.

    Returns:
        The scores, a float64 CPU tensor [B] (0-dim for [C, H, W] inputs); with
        ``return_aligned=True`` the tuple (scores, aligned, fell_back): the images
        compared with x (float64 CPU, x_adv's shape) and a bool CPU tensor, True where
        ECC failed and x_adv was used unaligned (all False when ``align=False``: no
        alignment was tried).
    """
    fn, names = "pass_score", ("x", "x_adv")
    needs = "OpenCV and scikit-image"
    x, x_adv, batched = _check_pair(fn, x, x_adv, names)
    _check_ssim_size(fn, x.shape, names)
    if align:
        _check_ecc_args(fn, x.shape[1], names, max_iterations, epsilon, gauss_filt_size)
        cv2 = _import_cv2(fn, needs)
    structural_similarity = _import_ssim(fn, needs)
    original, adversarial = _numpy64(x), _numpy64(x_adv)
    if align:
        aligned, _, fell_back = _ecc_batch(cv2, original, adversarial, max_iterations, epsilon, gauss_filt_size)
    else:
        aligned, fell_back = adversarial, np.zeros(original.shape[0], dtype=bool)
    scores = torch.tensor([_ssim_image(structural_similarity, original[i], aligned[i])
                           for i in range(original.shape[0])], dtype=torch.float64)
    scores = _per_image(scores, batched)
    if not return_aligned:
        return scores
    aligned_t, fell_back_t = torch.from_numpy(aligned), torch.from_numpy(fell_back)
    if not batched:
        aligned_t, fell_back_t = aligned_t[0], fell_back_t[0]
    return scores, aligned_t, fell_back_t


# ---------------------------------------------------------------------------------
# success rate


def _as_flags(fn: str, name: str, value) -> Tensor:
    t = torch.as_tensor(value).detach()
    if t.dtype == torch.bool:
        return t.cpu()
    if t.is_complex() or not ((t == 0) | (t == 1)).all():
        raise ValueError(f"{fn}: argument '{name}' must be a bool tensor or hold only 0 and 1")
    return t.cpu() != 0


def success_rate(success, mask=None) -> float:
    """The fraction of successes among the selected samples:
    ``sum(success & mask) / sum(mask)``.

    Args:
        success: per-sample success flags: a bool tensor (or array-like), or numbers
            that are all 0 or 1; any shape, any device.
        mask: which samples count, same shape as ``success`` (e.g. the samples the
            model classifies correctly, the only ones an attack can turn); None counts
            every sample.

    Returns:
        A Python float in [0, 1], or ``float('nan')`` when no sample is selected
        (an empty ``success`` or an all-False mask): a rate over no samples is
        undefined, and NaN keeps it from passing for 0% or 100% in a table or an
        average (``math.isnan`` tests for it).
    """
    fn = "success_rate"
    success = _as_flags(fn, "success", success)
    if mask is None:
        selected = int(success.numel())
        hits = int(success.sum())
    else:
        mask = _as_flags(fn, "mask", mask)
        if mask.shape != success.shape:
            raise ValueError(
                f"{fn}: arguments 'success' and 'mask' must have the same shape, "
                f"got {tuple(success.shape)} and {tuple(mask.shape)}"
            )
        selected = int(mask.sum())
        hits = int((success & mask).sum())
    return hits / selected if selected else float("nan")
