"""The committed gRPC stubs are what grpcio-tools makes from proto/ now.

The stubs in src/raftlock/v1/ are committed so that the package installs
without grpcio-tools; this fails when proto/ changed and nobody ran
scripts/gen-python.sh (which `scripts/gen-python.sh --check` also tells).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
STUBS = REPO_ROOT / "clients" / "python" / "src" / "raftlock" / "v1"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def committed_stubs() -> "set[str]":
    return {p.name for p in STUBS.iterdir() if p.name.endswith(GENERATED)}


def test_committed_stubs_equal_what_grpcio_tools_generates_from_proto(tmp_path: Path) -> None:
    protos = sorted(
        str(p.relative_to(REPO_ROOT / "proto"))
        for p in (REPO_ROOT / "proto" / "raftlock" / "v1").glob("*.proto")
    )
    assert protos, "no proto/raftlock/v1/*.proto"
    # As scripts/gen-python.sh runs it: from the repository's root, with
    # include-relative paths (protoc writes them into the stubs).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *(f"proto/{p}" for p in protos),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    generated = tmp_path / "raftlock" / "v1"
    fresh = {p.name for p in generated.iterdir() if p.name.endswith(GENERATED)}
    assert fresh, "grpcio-tools generated nothing"
    stale = sorted(
        name
        for name in fresh | committed_stubs()
        if not (STUBS / name).is_file()
        or not (generated / name).is_file()
        or (STUBS / name).read_bytes() != (generated / name).read_bytes()
    )
    assert not stale, (
        f"stale stubs in {STUBS}: {stale}; regenerate and commit them with scripts/gen-python.sh"
    )
