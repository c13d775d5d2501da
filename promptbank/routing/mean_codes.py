"""How the Gaussian/LDA routers store a class mean: float16, or 6/8-bit integer codes with one
scale per mean and its largest components kept exactly (6-bit codes packed four to three
bytes), held in memory exactly as saved so a loaded router routes like the one that saved it."""

from __future__ import annotations

import numpy as np

from ..errors import BankFormatError

#: Bits a Gaussian/LDA router stores each class mean in (``GaussianConfig.mean_bits``).
MEAN_BITS = (6, 8, 16)


#: 6- and 8-bit class means keep this many largest-magnitude components of each mean exactly
#: (``quantize_means``: 8 cost vader-4 1.1 routing points at 8 bits, 2.0 at 6; 32 none).
MEAN_OUTLIERS = 32


def quantize_means(means: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Class means at the precision they are saved in and held in memory, so a loaded router
    routes exactly like the one that saved it.

    16: float16 (1.9 KB per mean at 960-d). 6 and 8: the ``MEAN_OUTLIERS`` largest components
    of each mean kept exactly with their positions, the rest as integer codes with one scale
    per mean, ``max |rest| / (2^(bits-1) - 1)``. 6 bits: codes packed by ``pack_codes``, scale
    and exact values in float16, 850 B per mean at 960-d; 8 bits: float32, 1,156 B. Keys share
    a few dominant directions; one scale set by them left the other components too coarse, and
    whitening magnifies exactly those: on synthetic tasks that differ along low-variance
    directions, plain per-mean int8 routed 88.0% against 94.8% for float16. On the routing study's keys 8 outliers still cost
    vader-4, whose domain means lie close together, 1.1 points at 8 bits and 2.0 at 6; with 32,
    6 and 8 bits route as float16 does on offline-9, vader-4 and split-20ng
    (docs/routing.md, ``study-mean-bits.json``; 5 bits cost vader-4 a point, 4 bits five).

    Returns:
        ``(stored means, scale and outlier values or None, outlier positions or None)``; the
        codes are int8 (within +-31 at 6 bits).
    """
    if bits == 16:
        return means.astype(np.float16), None, None
    if bits not in MEAN_BITS:
        raise ValueError(f"mean_bits must be one of {MEAN_BITS}, got {bits!r}")
    levels = 2 ** (bits - 1) - 1
    rest = np.array(means, dtype=np.float32)
    k = min(MEAN_OUTLIERS, rest.shape[1])
    where = np.argpartition(np.abs(rest), -k, axis=1)[:, -k:]
    values = np.take_along_axis(rest, where, axis=1)
    np.put_along_axis(rest, where, 0.0, axis=1)
    step = np.abs(rest).max(axis=1) / levels
    step[step == 0] = 1.0
    codes = np.clip(np.rint(rest / step[:, None]), -levels, levels).astype(np.int8)
    exact = np.concatenate([step[:, None], values], axis=1).astype(SCALE_DTYPE[bits])
    return codes, exact, where.astype(np.int16)


#: What a coded mean's scale and exact components are kept in, by ``mean_bits``.
SCALE_DTYPE = {6: np.float16, 8: np.float32}


def saved_means(means: np.ndarray, bits: int) -> np.ndarray:
    """Stored class means as a state array: float16, int8 codes, or 6-bit codes packed."""
    if bits == 6:
        return pack_codes(means.astype(np.int8))
    return means.astype(np.int8 if bits == 8 else np.float16)


def checked_means(saved: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """``saved_means``' array as loaded, which is how the router holds it (6-bit codes stay
    packed: 240 B less per 960-d mean in memory than int8 codes).

    Raises:
        BankFormatError: the array's width does not hold ``dim`` components at ``bits``.
    """
    saved = np.asarray(saved)
    width = -(-dim // 4) * 3 if bits == 6 else dim
    if saved.ndim != 2 or saved.shape[1] != width:
        raise BankFormatError(f"{bits}-bit class means of shape {saved.shape} do not hold {dim} components per mean")
    return saved


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """6-bit class-mean codes (int8 within +-31, shape (C, dim)) packed four to three bytes:
    (C, ceil(dim / 4) * 3) uint8. ``unpack_codes`` inverts it."""
    c, d = codes.shape
    padded = np.zeros((c, -(-d // 4) * 4), np.uint8)
    padded[:, :d] = (codes.astype(np.int16) + 32).astype(np.uint8)
    q = padded.reshape(c, padded.shape[1] // 4, 4).astype(np.uint32)
    word = q[..., 0] | (q[..., 1] << 6) | (q[..., 2] << 12) | (q[..., 3] << 18)
    out = np.stack([word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF], axis=-1)
    return out.astype(np.uint8).reshape(c, padded.shape[1] // 4 * 3)


def unpack_codes(packed: np.ndarray, dim: int) -> np.ndarray:
    """The int8 codes ``pack_codes`` packed, (C, dim).

    Raises:
        BankFormatError: the packed rows do not hold ``dim`` codes.
    """
    packed = np.asarray(packed, np.uint8)
    if packed.ndim != 2 or packed.shape[1] != -(-dim // 4) * 3:
        raise BankFormatError(f"packed 6-bit means of shape {packed.shape} do not hold {dim} codes per mean")
    b = packed.reshape(len(packed), packed.shape[1] // 3, 3).astype(np.uint32)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    q = np.stack([(word >> s) & 0x3F for s in (0, 6, 12, 18)], axis=-1).reshape(len(packed), packed.shape[1] // 3 * 4)
    return (q[:, :dim].astype(np.int16) - 32).astype(np.int8)
