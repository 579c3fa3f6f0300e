"""The checked-in generated gRPC code matches the .proto files, and imports as `protos.omnisearch.v1`."""

from __future__ import annotations

import re
from pathlib import Path

from protos.generate import PROTO_ROOT, generate

# The stamps name the generator's version; the contract is everything else in the files.
_STAMP = re.compile(r"^(# Protobuf Python Version: .*|GRPC_GENERATED_VERSION = .*|\s+\d+,)$", re.M)


def _normalised(text: str) -> str:
    return _STAMP.sub("<version>", text)


def test_checked_in_code_is_fresh(tmp_path: Path) -> None:
    files = generate(tmp_path)
    assert {f.name for f in files} == {"omnisearch_pb2.py", "omnisearch_pb2.pyi", "omnisearch_pb2_grpc.py"}
    for rel in files:
        fresh = (tmp_path / rel).read_text()
        checked_in = PROTO_ROOT / rel
        assert checked_in.exists(), f"{checked_in} missing: run `python -m protos.generate`"
        assert _normalised(checked_in.read_text()) == _normalised(fresh), (
            f"{checked_in} is stale: run `python -m protos.generate` and commit the result"
        )


def test_generated_imports_resolve_inside_the_package() -> None:
    from protos.omnisearch.v1 import omnisearch_pb2 as pb
    from protos.omnisearch.v1 import omnisearch_pb2_grpc as pb_grpc

    req = pb.SearchRequest(vector=pb.Vector(values=[0.5, 1.0]), index="pins", k=3)
    back = pb.SearchRequest.FromString(req.SerializeToString())
    assert back.WhichOneof("query") == "vector"
    assert list(back.vector.values) == [0.5, 1.0]
    assert pb.DESCRIPTOR.package == "omnisearch.v1"
    names = {s.full_name for s in pb.DESCRIPTOR.services_by_name.values()}
    assert names == {"omnisearch.v1.SearchService", "omnisearch.v1.AdminService"}
    assert hasattr(pb_grpc, "add_SearchServiceServicer_to_server")
    grpc_src = Path(pb_grpc.__file__).read_text()
    assert "from protos.omnisearch.v1 import omnisearch_pb2" in grpc_src


def test_stale_file_is_detected(tmp_path: Path) -> None:
    generate(tmp_path)
    target = next(tmp_path.rglob("omnisearch_pb2.pyi"))
    target.write_text(target.read_text() + "\n# edited by hand\n")
    fresh_dir = tmp_path / "again"
    generate(fresh_dir)
    again = next(fresh_dir.rglob("omnisearch_pb2.pyi"))
    assert _normalised(target.read_text()) != _normalised(again.read_text())
