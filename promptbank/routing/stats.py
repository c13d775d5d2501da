"""Class statistics of a task's keys (counts, means, within-class scatter), accumulated a
block of keys at a time, and the compact forms the Gaussian and LDA routers keep them in."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import BankFormatError
from ..keys import l2_normalize
from .mean_codes import unpack_codes

#: Gaussian/LDA ``add_task`` centres and multiplies a task's keys this many rows at a time
#: (7.9 MB of float64 at 960-d), and ``add_task_blocks`` takes them a block at a time, so its
#: memory does not grow with the task: for a 20newsgroups-sized task (11,267 keys, 960-d)
#: numpy's peak inside add_task went from 248 to 30 MiB.
STATS_BLOCK_ROWS = 1024


@functools.lru_cache(maxsize=8)
def no_factor(dim: int) -> np.ndarray:
    """The empty (0, dim) scatter factor every task of an ``lda`` router at ``scatter_rank=0``
    shares (read-only), instead of one small array object per task."""
    out = np.zeros((0, dim), np.float16)
    out.setflags(write=False)
    return out


#: The empty residual shared by every task of an ``lda`` router (it keeps none).
NO_RESIDUAL = np.zeros(0, np.float32)
NO_RESIDUAL.setflags(write=False)


def shared_if_empty(factor: np.ndarray, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A task's scatter ``factor`` and ``residual``, or the shared empty ones where they hold
    nothing (an ``lda`` router keeps neither by default): at a million tasks one small array
    object per task and field would be ~0.25 GB of RSS."""
    return (
        no_factor(factor.shape[-1]) if not len(factor) else factor,
        NO_RESIDUAL if not residual.size else residual,
    )


@dataclass(frozen=True, slots=True)
class ClassRows:
    """The class rows of one or many tasks, side by side: a loaded router's state holds every
    task's rows in one set of arrays, and each task's ``TaskStats`` reads its range of them, so
    a task costs one small object instead of five array views (~550 B of RSS per task: 0.5 GB
    at a million tasks). Removing a task leaves its rows here until the router is saved."""

    labels: np.ndarray  # (C,) int64, -1 when classes are not modelled
    counts: np.ndarray  # (C,) int64
    means: np.ndarray  # as saved (``saved_means``): (C, dim) float16 (float32 in old states), or codes
    # when ``scale`` is set: int8 (8-bit) or 6-bit packed four to three bytes (uint8)
    scale: np.ndarray | None = None  # (C, 1 + k) for 6/8-bit means (float16/32): scale, outlier values
    outliers: np.ndarray | None = None  # (C, k) int16: where the outlier values go


class TaskStats:
    """What a task contributes: component (class) counts and means, and its scatter.

    The means are stored as ``quantize_means`` left them: float16, or integer codes (int8,
    within +-31 for 6-bit means) with one scale per mean (``scale``). The scatter is kept as
    ``count * (F^T F + diag(residual))``: F (rank x dim, float16) holds the top principal
    directions of the within-class spread (scaled per key), and the residual the rest of each
    dimension's variance. Exactly this matrix is added to the shared scatter, so removing the
    task subtracts exactly what it added, at a few KB per task instead of the 590 KB of a full
    384x384 float32 matrix. The class rows live in a ``ClassRows`` (``rows[start:stop]``).
    """

    __slots__ = ("rows", "start", "stop", "factor", "residual")

    def __init__(
        self,
        labels: np.ndarray,
        counts: np.ndarray,
        means: np.ndarray,
        factor: np.ndarray,
        residual: np.ndarray,
        scale: np.ndarray | None = None,
        outliers: np.ndarray | None = None,
    ) -> None:
        self.rows, self.start, self.stop = ClassRows(labels, counts, means, scale, outliers), 0, len(counts)
        self.factor = factor  # (rank, dim) float16
        self.residual = residual  # (dim,) float32, per-key variance left outside the factor; (0,) for LDA

    @classmethod
    def of_rows(cls, rows: ClassRows, start: int, stop: int, factor: np.ndarray, residual: np.ndarray) -> TaskStats:
        """A task whose classes are ``rows[start:stop]`` of a state holding many tasks."""
        out = cls.__new__(cls)
        out.rows, out.start, out.stop, out.factor, out.residual = rows, start, stop, factor, residual
        return out

    @property
    def labels(self) -> np.ndarray:
        return self.rows.labels[self.start : self.stop]

    @property
    def counts(self) -> np.ndarray:
        return self.rows.counts[self.start : self.stop]

    @property
    def means(self) -> np.ndarray:
        return self.rows.means[self.start : self.stop]

    @property
    def scale(self) -> np.ndarray | None:
        return None if self.rows.scale is None else self.rows.scale[self.start : self.stop]

    @property
    def outliers(self) -> np.ndarray | None:
        return None if self.rows.outliers is None else self.rows.outliers[self.start : self.stop]

    def scatter(self) -> np.ndarray:
        f = self.factor.astype(np.float64)
        n = float(self.counts.sum())
        out = n * (f.T @ f)
        out[np.diag_indices_from(out)] += n * self.residual.astype(np.float64)
        return out

    def float_means(self) -> np.ndarray:
        """The class means as float32 rows, decoded from their stored form."""
        means, scale = self.means, self.scale
        if scale is None:
            return means.astype(np.float32)
        codes = unpack_codes(means, self.factor.shape[-1]) if means.dtype == np.uint8 else means
        out = codes.astype(np.float32) * scale[:, :1]
        np.put_along_axis(out, self.outliers.astype(np.int64), scale[:, 1:], axis=1)
        return out


@functools.lru_cache(maxsize=1)
def blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS, built once: building it scans the process'
    libraries (~8 ms, measured as 60% of an LDA add_task when done on every call)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only a speed-up
        return None
    return ThreadpoolController()


def eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.linalg.eigh on one BLAS thread: the matrices are small (at most dim x dim), and
    multithreaded LAPACK on busy cores was measured 10-100x slower than one thread."""
    controller = blas_controller() if len(matrix) >= 32 else None
    if controller is None:
        return np.linalg.eigh(matrix)
    with controller.limit(limits=1, user_api="blas"):
        return np.linalg.eigh(matrix)


class BackgroundMoments:
    """Count-weighted moments of whitened class means, gathered a block at a time.

    While there are no more means than dimensions the means themselves are kept, and the
    spread of the means is decomposed through their small Gram matrix (k x k) instead of a
    dim x dim one: after every add to a small bank that halves the rebuild."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0.0
        self.first = np.zeros(dim)
        self.second: np.ndarray | None = None  # dim x dim, once the means outnumber dim
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.rows = 0

    def add(self, white_means: np.ndarray, counts: np.ndarray) -> None:
        """Fold in whitened means (rows) that summarise ``counts`` keys each."""
        w = counts.astype(np.float64)
        m = white_means.astype(np.float64)
        self.n += float(w.sum())
        self.first += w @ m
        self.rows += len(m)
        if self.second is None and self.rows <= self.dim:
            self.kept.append((m, w))
            return
        if self.second is None:
            self.second = np.zeros((self.dim, self.dim))
            for km, kw in self.kept:
                self.second += (km.T * kw) @ km
            self.kept = []
        self.second += (m.T * w) @ m

    def background(self, rank: int) -> Background:
        """The Gaussian of every key in whitened space: its centre, and its covariance
        ``I + B`` (within-class spread, whitened to I, plus the spread B of the class means)
        kept as B's top ``rank`` eigenpairs."""
        if self.n == 0:
            return Background(np.zeros(self.dim, np.float32), np.zeros((self.dim, 0), np.float32), np.zeros(0))
        centre = self.first / self.n
        if self.second is None:  # B = A^T A with A's k rows: decompose A A^T instead
            m = np.concatenate([km for km, _ in self.kept])
            w = np.concatenate([kw for _, kw in self.kept])
            a = np.sqrt(w / self.n)[:, None] * (m - centre)
            vals, small = eigh(a @ a.T)
            keep = vals > vals.max(initial=0.0) * 1e-9
            vals, vecs = vals[keep], (a.T @ small[:, keep]) / np.sqrt(vals[keep])
        else:
            vals, vecs = eigh(self.second / self.n - np.outer(centre, centre))
        top = np.argsort(vals)[::-1][:rank]
        vals = np.maximum(vals[top], 0.0)
        return Background(centre.astype(np.float32), vecs[:, top].astype(np.float32), vals / (1.0 + vals))


@dataclass
class Background:
    """A Gaussian over whitened keys, ``N(centre, I + U diag(l) U^T)``, stored as ``U`` and
    ``shrink = l / (1 + l)`` (Woodbury: the inverse is ``I - U diag(shrink) U^T``)."""

    centre: np.ndarray  # (dim,) float32
    directions: np.ndarray  # (dim, rank) float32, orthonormal columns
    shrink: np.ndarray  # (rank,) float64, in [0, 1)

    def squared_distance(self, white: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of whitened rows to the centre, float64 (n,).

        In float32 products (torch's thread pool, like the route's whitening): ||z - c||^2 is
        expanded so no (n, dim) difference is formed."""
        z = torch.from_numpy(np.ascontiguousarray(white, dtype=np.float32))
        centre = torch.from_numpy(self.centre)
        directions = torch.from_numpy(self.directions)
        square = torch.linalg.vector_norm(z, dim=1).double() ** 2 - 2.0 * (z @ centre).double() + float(centre @ centre)
        along = (z @ directions - centre @ directions).double()
        return (square - (along**2) @ torch.from_numpy(self.shrink)).numpy()


@dataclass
class ClassStats:
    """A new task's classes, their key counts and means, and its within-class scatter (the
    sum of outer products of its unit keys minus their class means, float64). While the keys
    are no more than the dimensions, ``centred`` holds those rows themselves and ``scatter``
    is None (``centred.T @ centred``, formed only where needed): a router can then fold many
    small tasks into its shared scatter with one product instead of one dim x dim matrix
    each."""

    classes: np.ndarray  # (C,) int64
    counts: np.ndarray  # (C,) int64
    means: np.ndarray  # (C, dim) float64
    scatter: np.ndarray | None  # (dim, dim) float64 when N > dim
    centred: np.ndarray | None  # (N, dim) float64 when N <= dim

    def diagonal(self) -> np.ndarray:
        """The scatter's diagonal (per-dimension sum of squares)."""
        if self.scatter is not None:
            return np.diag(self.scatter).copy()
        return (self.centred**2).sum(axis=0)

    def dense_scatter(self) -> np.ndarray:
        return self.scatter if self.scatter is not None else self.centred.T @ self.centred


class ClassStatsSum:
    """A task's class statistics, summed one block of keys at a time, so adding a task holds
    one block, not all its keys. Each block is centred on its own class means and merged
    with the pairwise update of Chan, Golub and LeVeque (1979): as precise as centring the
    whole task at once, in one pass."""

    def __init__(self, dim: int) -> None:
        self.classes = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self.means = np.zeros((0, dim))
        self.scatter: np.ndarray | None = None  # formed once the keys outnumber the dimensions
        self._unit: list[tuple[np.ndarray, np.ndarray]] | None = []  # the rows while n <= dim

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, keys: np.ndarray, labels: np.ndarray) -> None:
        """Fold in a block of float32 keys (normalised here) and their int64 labels."""
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        n, dim = keys.shape
        if self._unit is not None and self.n + n > dim:  # no longer small: form the scatter so far
            done = self._centred_rows() if self._unit else np.zeros((0, dim))
            self.scatter, self._unit = done.T @ done, None
        # One buffer, one product: the block's centred unit keys, then per class one row
        # sqrt(n_a n_b / n) (block mean - earlier mean), whose outer products are the
        # scatter between the block's and the earlier class means.
        rows = np.empty((n + len(classes), dim))
        unit = rows[:n]
        unit[:] = l2_normalize(keys)
        onehot = np.zeros((len(classes), n))
        onehot[inverse, np.arange(n)] = 1.0
        means = onehot @ unit / counts[:, None]
        new = np.setdiff1d(classes, self.classes)
        if len(new):
            self.classes = np.concatenate([self.classes, new])
            self.counts = np.concatenate([self.counts, np.zeros(len(new), np.int64)])
            self.means = np.concatenate([self.means, np.zeros((len(new), dim))])
        pos = np.array([np.flatnonzero(self.classes == c)[0] for c in classes])
        before = self.counts[pos]
        total = before + counts
        delta = means - self.means[pos]
        rows[n:] = delta * np.sqrt(before * counts / total)[:, None]
        self.means[pos] += delta * (counts / total)[:, None]
        self.counts[pos] = total
        if self._unit is not None:  # still small: keep the rows, the scatter stays implicit
            self._unit.append((unit.copy(), labels))
            return
        unit -= means[inverse]
        self.scatter += rows.T @ rows

    def _centred_rows(self) -> np.ndarray:
        """The kept unit keys minus their current class means."""
        unit = np.concatenate([u for u, _ in self._unit])
        labels = np.concatenate([lab for _, lab in self._unit])
        order = np.argsort(self.classes)
        return unit - self.means[order[np.searchsorted(self.classes[order], labels)]]

    def result(self) -> ClassStats:
        order = np.argsort(self.classes)
        classes, counts, means = self.classes[order], self.counts[order], self.means[order]
        centred = self._centred_rows() if self._unit is not None else None
        return ClassStats(classes, counts, means, self.scatter, centred)


def row_blocks(keys: np.ndarray, labels: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """``keys`` and ``labels`` in blocks of ``STATS_BLOCK_ROWS`` rows (views, no copies)."""
    for i in range(0, len(keys), STATS_BLOCK_ROWS):
        yield keys[i : i + STATS_BLOCK_ROWS], None if labels is None else labels[i : i + STATS_BLOCK_ROWS]


def principal_factor(cs: ClassStats, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(F, per-dimension variance) with F^T F the best rank-``rank`` part of the per-key
    covariance.

    With fewer keys than dimensions the small Gram matrix is decomposed instead of the
    rank-deficient covariance: cheaper, and LAPACK is very slow on the latter here.
    """
    n, d = int(cs.counts.sum()), cs.means.shape[1]
    variance = cs.diagonal() / n
    if rank == 0:
        return np.zeros((0, d), np.float16), variance
    if cs.centred is not None:
        vals, vecs = eigh(cs.centred @ cs.centred.T / n)
        vals, vecs = np.clip(vals[::-1][:rank], 0.0, None), vecs[:, ::-1][:, :rank]
        # right singular vectors scaled by sqrt(eigenvalue): centred^T u / sqrt(n)
        factor = (cs.centred.T @ vecs).T / np.sqrt(n)
    else:
        vals, vecs = eigh(cs.scatter / n)
        vals, vecs = np.clip(vals[::-1][:rank], 0.0, None), vecs[:, ::-1][:, :rank]
        factor = (vecs * np.sqrt(vals)).T
    out = np.zeros((rank, d), np.float16)
    out[: len(factor)] = factor
    return out, variance


@functools.lru_cache(maxsize=4)
def strictly_lower(dim: int) -> np.ndarray:
    return np.tri(dim, dtype=bool, k=-1)


def symmetric_float32(scatter: np.ndarray) -> np.ndarray:
    """``scatter`` rounded to float32 and made exactly symmetric from its upper triangle:
    the precision it is stored at, kept in memory too (590 KB at 384-d instead of 1.2 MB),
    so a saved router routes exactly like the one that saved it. Updates are computed in
    float64 and rounded once."""
    s32 = scatter.astype(np.float32)
    np.copyto(s32, s32.T, where=strictly_lower(len(s32)))
    return s32


def pack_upper(matrix: np.ndarray) -> np.ndarray:
    """Upper triangle (diagonal included) of a symmetric matrix, row by row, float32."""
    return matrix.astype(np.float32)[np.triu_indices(len(matrix))]


def unpack_upper(packed: np.ndarray, dim: int) -> np.ndarray:
    if packed.shape != (dim * (dim + 1) // 2,):
        raise BankFormatError(
            f"packed scatter has {packed.size} values, a {dim}x{dim} upper triangle has {dim * (dim + 1) // 2}"
        )
    out = np.zeros((dim, dim), np.float32)
    out[np.triu_indices(dim)] = packed
    lower = np.tril_indices(dim, -1)
    out[lower] = out.T[lower]
    return out


def lda_log_posterior(
    z: torch.Tensor, means: torch.Tensor, counts: np.ndarray, own: np.ndarray | None = None
) -> np.ndarray:
    """Linear discriminant log posteriors of whitened queries over one task's classes.

    Args:
        z: (n, dim) whitened queries (float64).
        means: (C, dim) the classes' whitened means (float64).
        counts: (C,) keys behind each mean; their shares are the class priors.
        own: for queries whose keys went into the means, each one's class position: it is then
            measured against its class mean *without* itself, (n m - z) / (n - 1), so that
            z - mean = n / (n - 1) (z - m); a class of few keys otherwise looks closer than it
            is to inputs it never saw.

    Returns:
        (n, C) float64 log posteriors (rows sum to 1 after ``exp``), at temperature 1.
    """
    dist = torch.cdist(z, means).square()
    if own is not None:
        position = torch.from_numpy(np.asarray(own, dtype=np.int64))
        n = torch.from_numpy(counts.astype(np.float64))[position]
        factor = torch.where(n > 1, n / (n - 1).clamp_min(1), torch.ones_like(n)).square()
        dist[torch.arange(len(dist)), position] *= factor
    logit = -0.5 * dist + torch.from_numpy(np.log(counts / counts.sum()))
    return torch.log_softmax(logit, dim=1).numpy()
