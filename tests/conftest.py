"""Shared pytest setup: make tests/ importable (for tests/reference.py) and keep torch single-threaded-friendly."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest
import torch


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread: tiny training loops are many small ops, which several
    threads slow down by an order of magnitude on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
