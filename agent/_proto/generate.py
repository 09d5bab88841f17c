"""Regenerate the gRPC code in this package from proto/ (`make proto`).

The .proto file is mapped onto this package's import path, so the generated
modules import each other as `agent._proto...` and need no sys.path tricks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO = "signing_agent/v1/signer.proto"


def generate(out_dir: Path) -> None:
    """Write signer_pb2.py, signer_pb2.pyi and signer_pb2_grpc.py under OUT_DIR/agent/_proto/."""
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-Iagent/_proto={ROOT / 'proto' / 'signing_agent' / 'v1'}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "agent/_proto/signer.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
