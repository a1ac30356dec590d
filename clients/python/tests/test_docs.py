"""docs/python.md's examples, run in order against a cluster of their own
(the dev cluster's addresses in them replaced by this cluster's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import raftlock

DOC = Path(__file__).resolve().parents[3] / "docs" / "python.md"
DEV = ["127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"]
# A block whose first line says so is shown, not run (it needs a TLS
# cluster: test_tls.py covers what it shows).
NOT_RUN = "# not run"


def blocks() -> "list[str]":
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_examples_and_runs_nearly_all_of_them():
    b = blocks()
    assert len(b) >= 10
    assert sum(x.startswith(NOT_RUN) for x in b) <= 1


@pytest.mark.timeout_s(180)
def test_every_example_in_docs_python_md_runs(fresh_cluster, monkeypatch, capsys):
    cluster = fresh_cluster(3)
    monkeypatch.setenv("RAFTLOCK_ENDPOINTS", ",".join(cluster.endpoints))
    for k in ("RAFTLOCK_CA", "RAFTLOCK_CERT", "RAFTLOCK_KEY", "RAFTLOCK_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(raftlock.recipes, "_default", None)
    namespace: dict = {}
    for i, code in enumerate(blocks()):
        if code.startswith(NOT_RUN):
            continue
        for dev, real in zip(DEV, cluster.endpoints):
            code = code.replace(dev, real)
        exec(compile(code, f"docs/python.md example {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    # What the examples print shows they did what the text says.
    assert "holding jobs/nightly with fencing token" in out
    assert "refused: STALE_TOKEN" in out
    assert "LOCK_BUSY" in out
    assert "released jobs/nightly" in out
    assert "cancelled wait withdrawn" in out and "ran under the lock" in out
