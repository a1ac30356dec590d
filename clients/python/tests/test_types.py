"""The package ships py.typed: its type hints must hold (mypy, pinned in
requirements-dev.txt), so that users' type checkers see the truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "raftlock"


def test_the_package_type_checks():
    pytest.importorskip("mypy", reason="mypy is in requirements-dev.txt (scripts/python-env.sh)")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", "/dev/null", "--ignore-missing-imports", str(SRC)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
