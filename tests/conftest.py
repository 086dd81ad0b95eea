"""Shared pytest setup: make tests/ importable (for tests/reference.py) and keep torch single-threaded-friendly."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
