"""Is the Hugging Face hub reachable? Answered in milliseconds, so offline users get a clear
error at once instead of ~25 s of download retries."""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

_TRUE = ("1", "ON", "YES", "TRUE")


def offline_mode() -> bool:
    """The user asked for offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when not in offline mode and the hub's host name resolves (getaddrinfo has no timeout of its own)."""
    if offline_mode():
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy DNS says nothing; let the download try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
