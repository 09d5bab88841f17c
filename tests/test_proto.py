"""The committed gRPC code is exactly what `make proto` generates from proto/."""

from __future__ import annotations

from pathlib import Path

from agent._proto.generate import generate

PACKAGE = Path(__file__).resolve().parents[1] / "agent" / "_proto"


def test_generated_code_is_reproducible_from_proto(tmp_path: Path):
    generate(tmp_path)
    names = ["signer_pb2.py", "signer_pb2.pyi", "signer_pb2_grpc.py"]
    for name in names:
        fresh = (tmp_path / "agent" / "_proto" / name).read_bytes()
        assert fresh == (PACKAGE / name).read_bytes(), f"{name} is stale: run `make proto` and commit"
