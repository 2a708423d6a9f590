"""Fixtures for model tests: no hub access, and a local HTTP file server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from model_server import FileServer, serving


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a hub, whatever library asks."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A local HTTP server on 127.0.0.1, stopped after the test."""
    with serving() as server:
        yield server
