"""Shared pytest fixtures."""
from pathlib import Path

import pytest

#: Real scans live beside the project (``../shared/data``), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder, or skip the test when it is absent (a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA
