"""robustops.metrics: the distances and PSNR against hand-computed values, SSIM against
scikit-image's Gaussian-window SSIM and Wang et al.'s formula written out, ECC
alignment undoing known shifts (and its exact OpenCV call), PASS on identical,
shifted, noisy, colour and unalignable images, the success rate's conventions, and
bad input."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from robustops import metrics
from tests.common import DEVICES

F64 = dict(rtol=1e-12, atol=1e-12)


def _blobs(size: int = 32, channels: int = 1, seed: int = 0, margin: int = 11) -> torch.Tensor:
    """A smooth image [channels, size, size] in [0, 1]: four Gaussian blobs (sigma 3-4)
    centred at least ``margin`` pixels from the border, so the border is ~0 (below
    0.02) and a shift by 1-2 pixels with torch.roll wraps nothing visible. Each channel
    weighs the blobs differently. (Blobs narrower than the shift can send ECC, a local
    optimizer started at the identity, to a spurious warp.)"""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    img = torch.zeros(channels, size, size, dtype=torch.float64)
    for _ in range(4):
        cy, cx = (margin + torch.rand(2, generator=g, dtype=torch.float64) * (size - 2 * margin)).tolist()
        sigma = 3 + float(torch.rand((), generator=g, dtype=torch.float64))
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        img += (0.2 + 0.3 * torch.rand(channels, 1, 1, generator=g, dtype=torch.float64)) * blob
    return img.clamp(0, 1)


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The content moved down by dy rows and right by dx columns."""
    return torch.roll(img, shifts=(dy, dx), dims=(-2, -1))


SHIFTS = [(0, 1), (1, 2), (2, -1), (-2, -2)]


# ---------------------------------------------------------------------------------
# distances and PSNR


# x and x_adv of a 1x2x2 image, dyadic so float32 holds them exactly.
X = [[0.0, 0.5], [1.0, 0.25]]
X_ADV = [[0.125, 0.25], [1.0, 0.75]]
# d = x_adv - x = (0.125, -0.25, 0, 0.5)
LINF = 0.5
L1 = 0.125 + 0.25 + 0 + 0.5                       # 0.875
L2 = math.sqrt(0.125**2 + 0.25**2 + 0.5**2)       # sqrt(0.328125)
DIST = L1 / 4                                     # 0.21875 per pixel (C H W = 4)
MSE = (0.125**2 + 0.25**2 + 0.5**2) / 4           # 0.08203125
PSNR = 10 * math.log10(1 / MSE)                   # 10.860... dB


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distances_hand_computed_one_image(dtype, device):
    x = torch.tensor([X], dtype=dtype, device=device)          # [C, H, W] = [1, 2, 2]
    x_adv = torch.tensor([X_ADV], dtype=dtype, device=device)
    norms = metrics.perturbation_norms(x, x_adv)
    assert set(norms) == {"linf", "l2", "l1"}
    for key, expected in (("linf", LINF), ("l2", L2), ("l1", L1)):
        value = norms[key]
        assert value.shape == () and value.dtype == torch.float64 and value.device.type == "cpu"
        assert_close(value, torch.tensor(expected, dtype=torch.float64), **F64)
    dist = metrics.mean_abs_distortion(x, x_adv)
    assert dist.shape == () and dist.dtype == torch.float64
    assert_close(dist, torch.tensor(DIST, dtype=torch.float64), **F64)
    value = metrics.psnr(x, x_adv)
    assert value.shape == () and value.dtype == torch.float64 and value.device.type == "cpu"
    assert_close(value, torch.tensor(PSNR, dtype=torch.float64), **F64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distances_hand_computed_batch(dtype, device):
    # image 0: the pair above; image 1: identical images; image 2: the pair above swapped
    x = torch.tensor([[X], [X], [X_ADV]], dtype=dtype, device=device)      # [3, 1, 2, 2]
    x_adv = torch.tensor([[X_ADV], [X], [X]], dtype=dtype, device=device)
    norms = metrics.perturbation_norms(x, x_adv)
    f64 = dict(dtype=torch.float64)
    assert_close(norms["linf"], torch.tensor([LINF, 0, LINF], **f64), **F64)
    assert_close(norms["l2"], torch.tensor([L2, 0, L2], **f64), **F64)
    assert_close(norms["l1"], torch.tensor([L1, 0, L1], **f64), **F64)
    assert_close(metrics.mean_abs_distortion(x, x_adv), torch.tensor([DIST, 0, DIST], **f64), **F64)
    assert_close(metrics.psnr(x, x_adv), torch.tensor([PSNR, math.inf, PSNR], **f64), **F64)
    for value in (*norms.values(), metrics.psnr(x, x_adv)):
        assert value.shape == (3,) and value.dtype == torch.float64 and value.device.type == "cpu"


def test_mean_abs_distortion_divides_by_channels_too():
    x = torch.zeros(2, 3, 2, 2)
    x_adv = x.clone()
    x_adv[0, 1, 0, 1] = 0.75                       # one value of 12 moves by 0.75
    x_adv[1] = 0.5                                 # every value moves by 0.5
    assert_close(metrics.mean_abs_distortion(x, x_adv), torch.tensor([0.75 / 12, 0.5], dtype=torch.float64), **F64)
    norms = metrics.perturbation_norms(x, x_adv)
    assert_close(norms["l1"], torch.tensor([0.75, 6.0], dtype=torch.float64), **F64)
    assert_close(norms["l2"], torch.tensor([0.75, math.sqrt(12 * 0.25)], dtype=torch.float64), **F64)


def test_psnr_identical_images_and_data_range():
    x = torch.rand(2, 3, 4, 4)
    assert metrics.psnr(x, x).tolist() == [math.inf, math.inf]
    y = x + 0.01
    # 255-scaled images with data_range=255 give the same dB: 10 log10(255^2 / (255^2 MSE))
    assert_close(metrics.psnr(255 * x.double(), 255 * y.double(), data_range=255), metrics.psnr(x, y), rtol=1e-9,
                 atol=1e-9)
    # a uniform offset of 0.01: MSE = 1e-4, 40 dB
    assert_close(metrics.psnr(x.double(), x.double() + 0.01), torch.full((2,), 40.0, dtype=torch.float64),
                 rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="'data_range' must be a finite number > 0"):
        metrics.psnr(x, y, data_range=0)


# ---------------------------------------------------------------------------------
# SSIM


WANG = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


def _reference_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """The reference: scikit-image's structural_similarity with Wang et al.'s
    settings on one image [C, H, W] (2-D for one channel, channel_axis=0 for more)."""
    from skimage.metrics import structural_similarity

    a, b = a.double().numpy(), b.double().numpy()
    if a.shape[0] == 1:
        return structural_similarity(a[0], b[0], **WANG)
    return structural_similarity(a, b, channel_axis=0, **WANG)


def _wang_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wang et al.'s SSIM written out, on one image [C, H, W]: at every pixel at least
    5 from the border, the means, variances and covariance under the 11x11 Gaussian
    window (sigma 1.5, normalised over its 11 taps per axis), population statistics,
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1; the mean of that map, averaged over
    the channels."""
    t = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * 1.5**2))
    g /= g.sum()
    w = torch.outer(g, g).flatten()  # [121]
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for x, y in zip(a.double(), b.double()):
        px = x.unfold(0, 11, 1).unfold(1, 11, 1).flatten(-2)  # [H - 10, W - 10, 121]
        py = y.unfold(0, 11, 1).unfold(1, 11, 1).flatten(-2)
        mx, my = px @ w, py @ w
        vx, vy = (px * px) @ w - mx**2, (py * py) @ w - my**2
        cxy = (px * py) @ w - mx * my
        ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(ssim_map.mean().item())
    return sum(values) / len(values)


def _images(channels: int, h: int = 16, w: int = 12):
    """Pairs [2, channels, h, w] float64 in [0, 1]: random images and their noisy
    copies, and smooth blob images and their noisy, brightened copies."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, channels, h, w, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    blobs = torch.stack([_blobs(size=max(h, w), channels=channels, seed=s, margin=3)[:, :h, :w] for s in (20, 21)])
    noisy = (0.8 * blobs + 0.1 + 0.05 * torch.randn(blobs.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return [("random", x, y), ("structured", blobs, noisy)]


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_is_wang_et_al_gaussian_ssim(channels):
    """ssim and pass_score(align=False) are scikit-image's structural_similarity with
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    which is Wang et al.'s SSIM written out by hand."""
    for _, x, y in _images(channels):
        expected = torch.tensor([_reference_ssim(x[i], y[i]) for i in range(2)], dtype=torch.float64)
        assert_close(expected, torch.tensor([_wang_ssim(x[i], y[i]) for i in range(2)], dtype=torch.float64),
                     rtol=0, atol=1e-12)
        assert_close(metrics.ssim(x, y), expected, **F64)
        assert_close(metrics.pass_score(x, y, align=False), expected, **F64)
        one = metrics.ssim(x[0], y[0])
        assert one.shape == () and one.item() == pytest.approx(expected[0].item(), abs=1e-12)
        # float32 inputs are compared in float64
        assert_close(metrics.ssim(x.float(), y.float()),
                     torch.tensor([_reference_ssim(x[i].float(), y[i].float()) for i in range(2)],
                                  dtype=torch.float64), **F64)
    x = _images(channels)[0][1]
    assert_close(metrics.ssim(x.float(), x.float()), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels", [1, 3])
def test_pass_score_of_a_shifted_image_is_the_gaussian_ssim_after_ecc(channels):
    """align=True: ECC (the exact OpenCV calls of ecc_align) undoes the shift, then
    PASS is the reference Gaussian SSIM of the original and the aligned image."""
    import cv2

    x = _blobs(channels=channels, seed=8)
    x_adv = _shift(x, 1, -2)
    score, aligned, fell_back = metrics.pass_score(x, x_adv, return_aligned=True)
    assert not fell_back

    def gray(img):
        return (img[0] if channels == 1 else 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).numpy()

    _, warp = cv2.findTransformECC(gray(x).astype(np.float32), gray(x_adv).astype(np.float32),
                                   np.eye(3, dtype=np.float32), cv2.MOTION_HOMOGRAPHY,
                                   (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-6), None, 5)
    src = x_adv[0].numpy() if channels == 1 else x_adv.permute(1, 2, 0).contiguous().numpy()
    warped = cv2.warpPerspective(src, warp, (32, 32), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
    warped = torch.from_numpy(warped)
    warped = warped[None] if channels == 1 else warped.permute(2, 0, 1)
    assert torch.equal(aligned, warped)
    assert score.item() == pytest.approx(_reference_ssim(x, warped), abs=1e-12)
    assert score.item() == pytest.approx(_wang_ssim(x, warped), abs=1e-12)
    assert score > 0.99
    unaligned = metrics.pass_score(x, x_adv, align=False)
    assert unaligned.item() == pytest.approx(_reference_ssim(x, x_adv), abs=1e-12) and unaligned < score


def test_ssim_is_not_the_uniform_7x7_window():
    """The old window (scikit-image's default: uniform 7x7, sample covariances) gives
    values far from these on structured images (blobs, noise and a brightness change:
    0.02 to 0.09 apart here); ours are the Gaussian ones."""
    from skimage.metrics import structural_similarity

    for channels in (1, 3):
        for name, x, y in _images(channels, 24, 20)[1:]:
            for i in range(2):
                if channels == 1:
                    uniform = structural_similarity(x[i, 0].numpy(), y[i, 0].numpy(), data_range=1.0)
                else:
                    uniform = structural_similarity(x[i].numpy(), y[i].numpy(), data_range=1.0, channel_axis=0)
                ours = metrics.ssim(x[i], y[i]).item()
                assert ours == pytest.approx(_wang_ssim(x[i], y[i]), abs=1e-12)
                assert abs(ours - uniform) > 0.01, (name, channels, ours, uniform)


@pytest.mark.parametrize("h, w", [(10, 10), (10, 32), (32, 10), (3, 3)])
def test_ssim_needs_11x11(h, w):
    """The 11x11 window needs images of at least 11x11 (scikit-image refuses smaller
    ones); the error says so, and 11x11 itself works."""
    x = torch.rand(1, h, w, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"^ssim: arguments 'x' and 'y' must be at least 11x11 for SSIM "
                                         rf"\(its 11x11 Gaussian window\), got {h}x{w}$"):
        metrics.ssim(x, x)
    with pytest.raises(ValueError, match=rf"^pass_score: arguments 'x' and 'x_adv' must be at least 11x11 "
                                         rf"for SSIM \(its 11x11 Gaussian window\), got {h}x{w}$"):
        metrics.pass_score(x, x, align=False)
    from skimage.metrics import structural_similarity

    with pytest.raises(ValueError, match="win_size exceeds image extent"):
        structural_similarity(x[0].numpy(), x[0].numpy(), **WANG)
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 1, 11, 11, generator=g, dtype=torch.float64)
    assert metrics.ssim(a, b).item() == pytest.approx(_reference_ssim(a, b), abs=1e-12)
    assert metrics.pass_score(a, b, align=False).item() == pytest.approx(_wang_ssim(a, b), abs=1e-12)


# ---------------------------------------------------------------------------------
# ECC alignment


@pytest.mark.parametrize("gauss_filt_size", [1, 5])
@pytest.mark.parametrize("dy, dx", SHIFTS)
def test_ecc_align_undoes_a_translation(dy, dx, gauss_filt_size):
    x = _blobs(seed=3)
    x_adv = _shift(x, dy, dx)
    aligned, homography, fell_back = metrics.ecc_align(x, x_adv, gauss_filt_size=gauss_filt_size)
    assert not fell_back and fell_back.dtype == torch.bool
    assert aligned.shape == x.shape and aligned.dtype == torch.float64
    assert homography.shape == (3, 3) and homography.dtype == torch.float64
    # aligned(p) = x_adv(W p) = x(W p - shift): W is the translation by (dx, dy)
    assert abs(homography[0, 2].item() - dx) < 0.2 and abs(homography[1, 2].item() - dy) < 0.2
    assert_close(homography[:2, :2], torch.eye(2, dtype=torch.float64), rtol=0, atol=0.05)
    assert_close(homography[2], torch.tensor([0, 0, 1], dtype=torch.float64), rtol=0, atol=0.01)
    # the displacement W p - p at the image centre, where the content is
    centre = torch.tensor([15.5, 15.5, 1.0], dtype=torch.float64)
    moved = homography @ centre
    assert_close(moved[:2] / moved[2] - centre[:2], torch.tensor([dx, dy], dtype=torch.float64), rtol=0, atol=0.1)
    # away from the border (which the warp fills with 0 where it reads outside)
    interior = (slice(None), slice(4, -4), slice(4, -4))
    assert (aligned - x)[interior].abs().max() < 0.01
    assert (x_adv - x)[interior].abs().max() > 0.05  # there was something to undo


def test_ecc_align_is_the_documented_opencv_call():
    """Colour images: ECC on the luminance with the exact call, every channel warped."""
    import cv2

    x = _blobs(channels=3, seed=4)
    x_adv = _shift(x, 1, -2)
    result = metrics.ecc_align(x[None], x_adv[None], max_iterations=50, epsilon=1e-5, gauss_filt_size=3)
    assert result.aligned.shape == (1, 3, 32, 32) and result.homography.shape == (1, 3, 3)
    assert result.fell_back.tolist() == [False]

    def luminance(img):
        return (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).numpy().astype(np.float32)

    _, warp = cv2.findTransformECC(luminance(x), luminance(x_adv), np.eye(3, dtype=np.float32),
                                   cv2.MOTION_HOMOGRAPHY,
                                   (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-5), None, 3)
    assert torch.equal(result.homography[0], torch.from_numpy(warp).double())
    warped = cv2.warpPerspective(x_adv.permute(1, 2, 0).contiguous().numpy(), warp, (32, 32),
                                 flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
    assert torch.equal(result.aligned[0], torch.from_numpy(warped).permute(2, 0, 1))
    assert abs(warp[0, 2] + 2) < 0.2 and abs(warp[1, 2] - 1) < 0.2


def test_ecc_align_falls_back_for_constant_images():
    x = _blobs(seed=5)
    flat = torch.full_like(x, 0.5)
    batch = torch.stack([x, x, flat])
    batch_adv = torch.stack([_shift(x, 1, 1), flat, _shift(x, 1, 1)])
    aligned, homography, fell_back = metrics.ecc_align(batch, batch_adv)
    assert fell_back.tolist() == [False, True, True]
    for i in (1, 2):
        assert torch.equal(aligned[i], batch_adv[i])          # left as it was
        assert torch.equal(homography[i], torch.eye(3, dtype=torch.float64))


# ---------------------------------------------------------------------------------
# PASS


@pytest.mark.parametrize("channels", [1, 3])
def test_pass_of_identical_images_is_one(channels):
    x = torch.stack([_blobs(channels=channels, seed=6), _blobs(channels=channels, seed=7)]).float()
    for align in (True, False):
        scores = metrics.pass_score(x, x.clone(), align=align)
        assert scores.shape == (2,) and scores.dtype == torch.float64
        assert_close(scores, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_pass_forgives_a_small_shift(channels):
    x = _blobs(channels=channels, seed=8)
    x_batch = x.expand(len(SHIFTS), -1, -1, -1)
    x_adv = torch.stack([_shift(x, dy, dx) for dy, dx in SHIFTS])
    aligned_scores, aligned, fell_back = metrics.pass_score(x_batch, x_adv, return_aligned=True)
    plain = metrics.pass_score(x_batch, x_adv, align=False)
    assert not fell_back.any() and aligned.shape == x_adv.shape
    assert (aligned_scores > 0.99).all(), aligned_scores
    assert (aligned_scores > plain).all() and (plain < 0.97).all(), plain
    # PASS is the SSIM of the original and the image it returns as aligned
    assert_close(aligned_scores, metrics.ssim(x_batch, aligned), **F64)
    # and a batch scores as its images do one by one
    for i in range(len(SHIFTS)):
        one = metrics.pass_score(x, x_adv[i])
        assert one.shape == () and one.item() == aligned_scores[i].item()


def test_pass_drops_with_noise():
    x = _blobs(seed=9)
    shifted = _shift(x, 1, 2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noisy = (shifted + 0.1 * noise).clamp(0, 1)
    clean_score, noisy_score = metrics.pass_score(torch.stack([x, x]), torch.stack([shifted, noisy]))
    assert clean_score > 0.99
    assert noisy_score < clean_score - 0.2, (clean_score, noisy_score)
    _, _, fell_back = metrics.pass_score(x, noisy, return_aligned=True)
    assert not fell_back  # the drop is the noise's, not a failed alignment


def test_pass_falls_back_to_the_unaligned_image():
    x = _blobs(seed=10)
    flat = torch.full_like(x, 0.5)
    scores, aligned, fell_back = metrics.pass_score(torch.stack([x, x]), torch.stack([flat, _shift(x, 0, 1)]),
                                                    return_aligned=True)
    assert fell_back.tolist() == [True, False]
    assert torch.equal(aligned[0], flat)
    assert scores[0].item() == metrics.ssim(x, flat).item()
    assert scores[1] > 0.99
    # no alignment tried: the images compared are x_adv and nothing fell back
    _, aligned, fell_back = metrics.pass_score(x, flat, align=False, return_aligned=True)
    assert fell_back.shape == () and not fell_back and torch.equal(aligned, flat)


@pytest.mark.parametrize("device", DEVICES)
def test_pass_accepts_any_device_and_returns_cpu(device):
    x = _blobs(seed=11).float()[None].to(device)
    scores = metrics.pass_score(x, _shift(x, 1, 0))
    assert scores.device.type == "cpu" and scores.dtype == torch.float64 and scores.item() > 0.99


# ---------------------------------------------------------------------------------
# missing dependencies


def test_missing_opencv(monkeypatch):
    x = _blobs(seed=12)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"^robustops\.metrics\.pass_score needs OpenCV and scikit-image: "
                                          r"pip install 'robustops\[metrics\]'$") as err:
        metrics.pass_score(x, x)
    assert isinstance(err.value.__cause__, ImportError)
    with pytest.raises(ImportError, match=r"robustops\.metrics\.ecc_align needs OpenCV: "):
        metrics.ecc_align(x, x)
    assert metrics.pass_score(x, x, align=False).item() == pytest.approx(1.0, abs=1e-12)  # SSIM alone needs no OpenCV


def test_missing_scikit_image(monkeypatch):
    x = _blobs(seed=12)
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    with pytest.raises(ImportError, match=r"^robustops\.metrics\.pass_score needs OpenCV and scikit-image: "
                                          r"pip install 'robustops\[metrics\]'$"):
        metrics.pass_score(x, x, align=False)
    with pytest.raises(ImportError, match=r"robustops\.metrics\.ssim needs scikit-image: "):
        metrics.ssim(x, x)


# ---------------------------------------------------------------------------------
# success rate


def test_success_rate():
    success = torch.tensor([True, False, True, True])
    assert metrics.success_rate(success) == 0.75
    assert metrics.success_rate(success, mask=torch.tensor([True, True, False, False])) == 0.5
    assert metrics.success_rate(success, mask=torch.tensor([0, 1, 0, 1])) == 0.5     # 0/1 numbers
    assert metrics.success_rate([1, 0, 0, 0]) == 0.25                                 # array-like
    assert isinstance(metrics.success_rate(success), float)


def test_success_rate_of_no_samples_is_nan():
    success = torch.tensor([True, False])
    assert math.isnan(metrics.success_rate(success, mask=torch.tensor([False, False])))
    assert math.isnan(metrics.success_rate(torch.zeros(0, dtype=torch.bool)))


def test_success_rate_bad_arguments():
    with pytest.raises(ValueError, match="'success' and 'mask' must have the same shape"):
        metrics.success_rate(torch.tensor([True, False]), mask=torch.tensor([True]))
    with pytest.raises(ValueError, match="'success' must be a bool tensor or hold only 0 and 1"):
        metrics.success_rate(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="'mask' must be a bool tensor or hold only 0 and 1"):
        metrics.success_rate(torch.tensor([True]), mask=torch.tensor([2]))


# ---------------------------------------------------------------------------------
# bad input


PAIRS = [
    ("perturbation_norms", ("x", "x_adv")),
    ("mean_abs_distortion", ("x", "x_adv")),
    ("psnr", ("x", "x_adv")),
    ("ssim", ("x", "y")),
    ("ecc_align", ("original", "adversarial")),
    ("pass_score", ("x", "x_adv")),
]


@pytest.mark.parametrize("name, args", PAIRS)
def test_bad_images(name, args):
    fn = getattr(metrics, name)
    a, b = args
    with pytest.raises(ValueError, match=rf"^{name}: arguments '{a}' and '{b}' must have the same shape, "
                                         r"got \(1, 1, 8, 8\) and \(1, 1, 8, 9\)$"):
        fn(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match="same shape, got \\(1, 8, 8\\) and \\(1, 1, 8, 8\\)"):
        fn(torch.rand(1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=f"{name}: argument '{a}' must have shape \\[B, C, H, W\\] or \\[C, H, W\\]"):
        fn(torch.rand(8, 8), torch.rand(8, 8))
    with pytest.raises(TypeError, match=f"{name}: argument '{b}' must be a floating-point tensor, got torch.int64"):
        fn(torch.rand(1, 8, 8), torch.ones(1, 8, 8, dtype=torch.long))
    with pytest.raises(TypeError, match=f"{name}: argument '{a}' must be a tensor, got ndarray"):
        fn(np.zeros((1, 8, 8)), torch.rand(1, 8, 8))


def test_bad_ssim_and_ecc_arguments():
    x = torch.rand(2, 16, 16)
    with pytest.raises(ValueError, match=r"ssim: arguments 'x' and 'y' must be at least 11x11 for SSIM .*, got 2x8"):
        metrics.ssim(torch.rand(1, 2, 8), torch.rand(1, 2, 8))
    with pytest.raises(ValueError, match="pass_score: arguments 'x' and 'x_adv' must be at least 11x11"):
        metrics.pass_score(torch.rand(1, 8, 2), torch.rand(1, 8, 2))
    with pytest.raises(ValueError, match="ecc_align: ECC alignment needs 1-channel or 3-channel .* got 2 channels"):
        metrics.ecc_align(x, x)
    with pytest.raises(ValueError, match="pass_score: ECC alignment needs 1-channel or 3-channel"):
        metrics.pass_score(x, x)
    assert metrics.pass_score(x, x, align=False).item() == pytest.approx(1.0, abs=1e-12)  # SSIM takes any C
    y = torch.rand(1, 16, 16)
    with pytest.raises(ValueError, match="'gauss_filt_size' must be an odd integer >= 1, got 4"):
        metrics.ecc_align(y, y, gauss_filt_size=4)
    with pytest.raises(ValueError, match="'max_iterations' must be an integer >= 1, got 0"):
        metrics.pass_score(y, y, max_iterations=0)
    with pytest.raises(ValueError, match="'epsilon' must be a finite number, got nan"):
        metrics.ecc_align(y, y, epsilon=math.nan)
