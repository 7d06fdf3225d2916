"""The fleet tests' private Mosquitto: persistent, so a drill can restart it and keep sessions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from voltwatch_mqtt.testing import MosquittoBroker, find_mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (make test installs it with apt-get)")
    with MosquittoBroker(tmp_path / "broker", persistence=True) as running:
        yield running
