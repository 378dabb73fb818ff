"""Datasets the project can make offline, deterministically (seeded), for the bundled architectures.

- :func:`digits32`: scikit-learn's 8x8 digits rendered as 32x32 RGB images (bilinear upsampling,
  a random shift of up to 2 pixels, random foreground and background colours, a little noise),
  for the image models. Split 60/20/20 (stratified) *before* rendering; the training split can
  be rendered several times (``train_copies``) as a deterministic augmentation.
- :func:`signals1d`: an MNIST-1D-style dataset of 1-D signals (Greydanus, "Scaling down deep
  learning", 2020): ten 12-point templates, each sample padded, dilated, scaled, translated,
  filled with correlated noise, sheared, noised and resampled to ``length`` points. The templates
  are generated here from a fixed seed (the ``mnist1d`` package is not used: its import pulls
  matplotlib and requests, and its ``get_dataset`` downloads).

Each returns ``(train, val, test)``, each ``(X float32, y int64)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["digits32", "signals1d", "split"]


def split(X: np.ndarray, y: np.ndarray, seed: int = 0):
    """Stratified 60/20/20 split into contiguous float32 / int64 arrays."""
    from sklearn.model_selection import train_test_split

    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.4, stratify=y, random_state=seed)
    X_val, X_te, y_val, y_te = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    f = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    i = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    return (f(X_tr), i(y_tr)), (f(X_val), i(y_val)), (f(X_te), i(y_te))


def _render(digits: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """(N, 8, 8) in [0, 1] -> (N, 3, size, size) RGB, normalized to about zero mean, unit range."""
    import torch
    import torch.nn.functional as F

    n, inner = len(digits), size - 8
    up = (
        F.interpolate(
            torch.from_numpy(digits[:, None].astype(np.float32)),
            size=(inner, inner),
            mode="bilinear",
            align_corners=False,
        )
        .clamp_(0, 1)
        .numpy()[:, 0]
    )
    out = np.empty((n, 3, size, size), dtype=np.float32)
    shifts = rng.integers(-2, 3, size=(n, 2))
    fg = rng.uniform(0.55, 1.0, size=(n, 3)).astype(np.float32)
    bg = rng.uniform(0.0, 0.35, size=(n, 3)).astype(np.float32)
    noise = rng.normal(0.0, 0.03, size=out.shape).astype(np.float32)
    for k in range(n):
        canvas = np.zeros((size, size), dtype=np.float32)
        r, c = 4 + shifts[k, 0], 4 + shifts[k, 1]
        canvas[r : r + inner, c : c + inner] = up[k]
        out[k] = bg[k][:, None, None] + (fg[k] - bg[k])[:, None, None] * canvas[None]
    return (out + noise - 0.5) / 0.5


def digits32(seed: int = 0, *, size: int = 32, train_copies: int = 1):
    """scikit-learn digits as (3, size, size) images: ``(train, val, test)``; 1078/359/360 digits.

    ``train_copies`` > 1 renders each training digit that many times (different shifts and
    colours), a deterministic augmentation; validation and test are rendered once.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32) / 16.0
    (tr_i, tr_y), (va_i, va_y), (te_i, te_y) = split(np.arange(len(images)), d.target, seed)
    rng = np.random.default_rng(seed)
    tr_idx = np.concatenate([tr_i.astype(np.int64)] * train_copies)
    parts = []
    for idx, y in (
        (tr_idx, np.concatenate([tr_y] * train_copies)),
        (va_i.astype(np.int64), va_y),
        (te_i.astype(np.int64), te_y),
    ):
        parts.append((np.ascontiguousarray(_render(images[idx], rng, size)), y))
    return tuple(parts)


def _templates(n_classes: int, points: int = 12) -> np.ndarray:
    """Fixed smooth templates: seeded random walks, smoothed, standardized, starting and ending at 0."""
    rng = np.random.default_rng(20240521)
    t = rng.normal(size=(n_classes, points)).cumsum(1)
    t = np.apply_along_axis(lambda v: np.convolve(np.pad(v, 1, mode="edge"), [0.25, 0.5, 0.25], "valid"), 1, t)
    t = (t - t.mean(1, keepdims=True)) / t.std(1, keepdims=True)
    t[:, [0, -1]] = 0.0
    return t / 6.0


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def _signal(template: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    x = np.concatenate([template + 1e-8, np.zeros(rng.integers(36, 61))])  # pad
    x = _resample(x, len(template) + 60)  # dilate
    x = x * (1 + 0.4 * (rng.random() - 0.5))  # scale
    x = np.roll(x, int(rng.integers(0, 48)))  # translate
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    corr = np.convolve(rng.normal(0, 0.25, len(x)), kernel / kernel.sum(), "same")
    x = np.where(x != 0, x, corr) + rng.normal(0, 0.02, len(x))  # correlated background, iid noise
    x = x - 0.75 * (rng.random() - 0.5) * np.linspace(-0.5, 0.5, len(x))  # shear
    return _resample(x, length)


def signals1d(n_samples: int = 5000, *, length: int = 64, n_classes: int = 10, seed: int = 0):
    """MNIST-1D-style signals as (1, length) sequences: ``(train, val, test)``, 60/20/20 stratified."""
    templates = _templates(n_classes)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % n_classes
    X = np.stack([_signal(templates[c], rng, length) for c in y])
    X = ((X - X.mean()) / X.std()).astype(np.float32)[:, None, :]
    return split(X, y, seed)
