"""Options of the Gaussian and LDA routers (``GaussianConfig``), kept apart from the router so
the router module holds the routing alone."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidDataError
from .base import RouterConfig
from .mean_codes import MEAN_BITS

#: Lists the LDA router scans per query. Its auto IVF trains spherical k-means, whose lists
#: come out even (at 100k synthetic tasks the largest held 80 means, not 403), so 8 lists
#: suffice: 99.4-99.7% / 100% agreement with exact LDA at 384 / 960 dims (BENCHMARKS.md section 2).
LDA_NPROBE = 8
#: what a Gaussian/LDA router's ``closeness`` measures (see GaussianRouter)
NOVELTY_SCORES = ("relative", "posterior", "nearest", "margin")


@dataclass
class GaussianConfig(RouterConfig):
    """Options of the Gaussian router (and, with other defaults, of LDA).

    Args:
        per_class: one Gaussian per class of each task (else one per task).
        shrinkage: covariance shrinkage towards a scaled identity: "oas" (from the data) or
            a number in [0, 1].
        scatter_rank: rank of the per-task scatter factor kept for exact removal.
        temperature: softmax temperature of the routing posterior.
        search_k: nearest whitened means searched per query.
        index: "auto" or a FAISS factory spec (L2 over whitened means).
        novelty: what ``closeness`` measures: "relative", "posterior", "nearest" or "margin" (GaussianRouter).
        novelty_temperature: the softer temperature of the "posterior" closeness.
        nprobe: IVF lists scanned per query (``LDA_NPROBE``).
        mean_bits: bits each class mean is stored in: 6, 8 or 16 (``mean_codes.quantize_means``).
    """

    per_class: bool = False
    shrinkage: str | float = "oas"
    scatter_rank: int = 8
    temperature: float = 1.0
    search_k: int = 32
    index: str = "auto"
    novelty: str = "relative"
    novelty_temperature: float = 30.0
    nprobe: int = LDA_NPROBE
    mean_bits: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.novelty not in NOVELTY_SCORES or not self.novelty_temperature > 0:
            raise InvalidDataError(
                f"novelty must be one of {NOVELTY_SCORES} and novelty_temperature > 0, "
                f"got {self.novelty!r} / {self.novelty_temperature!r}"
            )
        shrinkage = self.shrinkage
        if shrinkage != "oas" and not (isinstance(shrinkage, (int, float)) and 0 <= shrinkage <= 1):
            raise InvalidDataError(f"shrinkage must be 'oas' or a number in [0, 1], got {shrinkage!r}")
        if not 0 <= self.scatter_rank <= self.dim:
            raise InvalidDataError(f"scatter_rank must be in [0, {self.dim}], got {self.scatter_rank}")
        if self.mean_bits not in MEAN_BITS:
            raise InvalidDataError(f"mean_bits must be one of {MEAN_BITS}, got {self.mean_bits!r}")
        if not self.temperature > 0 or self.search_k < 1 or self.nprobe < 1:
            raise InvalidDataError("temperature must be > 0, search_k >= 1 and nprobe >= 1")
        self.per_class, self.scatter_rank, self.temperature = (
            bool(self.per_class),
            int(self.scatter_rank),
            float(self.temperature),
        )
        self.search_k, self.index, self.nprobe = int(self.search_k), str(self.index), int(self.nprobe)
        self.novelty_temperature = float(self.novelty_temperature)
