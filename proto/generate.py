"""Generate the gRPC Python code for proto/videogen/v1 into serve/api/videogen/v1."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "serve" / "api"


def generate() -> list[Path]:
    """Run protoc on every .proto file; make the generated imports package-relative."""
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={OUT_ROOT}", f"--pyi_out={OUT_ROOT}"]
    args += [f"--grpc_python_out={OUT_ROOT}", *map(str, protos)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {', '.join(map(str, protos))}")
    generated = sorted((OUT_ROOT / "videogen").rglob("*.py"))
    for path in generated:
        # protoc writes absolute imports (`from videogen.v1 import x_pb2`); the code lives under serve.api.
        text = re.sub(r"^from videogen\.v1 import", "from . import", path.read_text(), flags=re.M)
        # The module name recorded for the message classes must be importable, or pickling
        # (Ray passes requests between processes) fails.
        text = re.sub(r"'(videogen\.[\w.]+_pb2)'", r"'serve.api.\1'", text)
        path.write_text(text)
    for package in {p.parent for p in generated} | {OUT_ROOT / "videogen"}:
        (package / "__init__.py").touch()
    return generated


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(ROOT), file=sys.stderr)
