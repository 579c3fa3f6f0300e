"""Regenerate the checked-in Python code of every .proto under protos/: `python -m protos.generate`."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
# Generated modules live inside the `protos` package: `omnisearch.v1` imports become `protos.omnisearch.v1`.
PACKAGE_PREFIX = "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class GenerateError(RuntimeError):
    """protoc failed or is not installed."""


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto file below `root`, relative to it, sorted."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def _fix_imports(text: str) -> str:
    # protoc writes `from omnisearch.v1 import x_pb2`, which only resolves with protos/ on sys.path.
    return re.sub(r"^from omnisearch\.", f"from {PACKAGE_PREFIX}.omnisearch.", text, flags=re.MULTILINE)


def generate(out_root: Path = PROTO_ROOT, root: Path = PROTO_ROOT) -> list[Path]:
    """Run grpc_tools.protoc on every .proto and write the fixed-up modules under `out_root`.

    Args:
        out_root: folder mirroring `root` that receives `<name>_pb2.py`, `_pb2.pyi` and `_pb2_grpc.py`.
        root: folder holding the .proto files (the import root given to protoc).

    Returns:
        The generated files, relative to `out_root`, sorted.
    """
    try:
        from grpc_tools import protoc
    except ImportError as err:  # grpcio-tools is a dev extra, not a runtime dependency
        raise GenerateError("grpcio-tools is missing: pip install -e '.[dev]'") from err
    import importlib.resources

    protos = proto_files(root)
    if not protos:
        raise GenerateError(f"no .proto files under {root}")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p) for p in protos],
        ]
        code = protoc.main(args)
        if code != 0:
            raise GenerateError(f"protoc exited with {code}: {' '.join(args)}")
        written: list[Path] = []
        for src in sorted(Path(tmp).rglob("*")):
            if not src.is_file() or not src.name.endswith(GENERATED_SUFFIXES):
                continue
            rel = src.relative_to(tmp)
            dst = out_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp_dst = dst.with_name(dst.name + ".tmp")
            tmp_dst.write_text(_fix_imports(src.read_text()))
            tmp_dst.replace(dst)
            written.append(rel)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: protos/ itself)")
    args = parser.parse_args(argv)
    try:
        files = generate(args.out)
    except GenerateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for f in files:
        print(args.out / f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
