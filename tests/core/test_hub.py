"""The hub probe answers fast, honours offline mode and proxies."""

from __future__ import annotations

import socket

from promptbank import hub


def test_probe_follows_dns_and_offline_mode(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def no_dns(*_a, **_k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert hub.hub_reachable(timeout=2.0) is False
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_a, **_k: [("ok",)])
    assert hub.hub_reachable(timeout=2.0) is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_mode() and hub.hub_reachable(timeout=2.0) is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert hub.hub_reachable(timeout=2.0) is True  # behind a proxy, let the download decide
