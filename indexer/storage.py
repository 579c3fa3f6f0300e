"""Shard folders on disk: write (temp folder, then rename), checksum, verify, hard-link into a new generation.

A shard folder holds the backend's files (index.bin, backend.json, maybe labels.npy), `ids.json` (the entity
ids, position i = label i) and `metadata.json` (how it was built: parameters, library versions, UTC time and the
sha256 of every other file). The shard digest recorded in the manifest is the sha256 over the sorted list of
(file name, file sha256) of every file in the folder, metadata.json included.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from indexer.backends import AnnBackend
from indexer.errors import ShardCorrupt
from indexer.manifest import ShardRecord, utc_now

IDS_FILE = "ids.json"
META_FILE = "metadata.json"
TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


def library_versions() -> dict[str, str]:
    """Versions of the libraries an index file depends on."""
    out = {"python": platform.python_version()}
    for dist in ("faiss-cpu", "faiss-gpu-cu12", "hnswlib", "numpy", "omnisearchsage"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def shard_digest(directory: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256 over the folder's files, total bytes)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ShardCorrupt(f"shard folder {folder} is missing")
    h = hashlib.sha256()
    total = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f"{path.name}\0{file_sha256(path)}\n".encode())
        total += path.stat().st_size
    return h.hexdigest(), total


def write_shard(
    backend: AnnBackend,
    ids: Sequence[str],
    target: Path,
    info: dict[str, Any],
) -> ShardRecord:
    """Save a built backend and its ids into `target` (which must not exist yet) atomically.

    Everything is written into a temp folder beside `target` and renamed at the end, so `target` either does
    not exist or is complete.
    """
    tmp = target.parent / f"{TMP_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        backend.save(tmp)
        (tmp / IDS_FILE).write_text(json.dumps(list(ids), ensure_ascii=False))
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
        meta = {
            **info,
            "backend": backend.name,
            "dim": backend.dim,
            "metric": backend.metric,
            "params": backend.params,
            "count": len(ids),
            "library_versions": library_versions(),
            "created_at": utc_now(),
            "files": files,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        digest, size = shard_digest(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardRecord(int(info.get("shard", 0)), str(target), len(ids), digest, size)


def verify_shard(record: ShardRecord) -> None:
    """Raise ShardCorrupt unless the folder's files hash to the recorded digest."""
    digest, _ = shard_digest(record.path)
    if digest != record.sha256:
        raise ShardCorrupt(
            f"shard {record.shard} at {record.path}: checksum {digest[:12]} does not match the manifest's "
            f"{record.sha256[:12]}; rebuild or roll back"
        )


def read_ids(directory: str | os.PathLike[str]) -> list[str]:
    try:
        ids: list[str] = json.loads((Path(directory) / IDS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ShardCorrupt(f"cannot read {IDS_FILE} in {directory}: {exc}") from exc
    return ids


def link_shard(record: ShardRecord, target: Path) -> ShardRecord:
    """Put the same files at `target` (hard links; a copy where links are not possible), atomically."""
    tmp = target.parent / f"{TMP_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for src in Path(record.path).iterdir():
            try:
                os.link(src, tmp / src.name)
            except OSError:
                shutil.copy2(src, tmp / src.name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardRecord(record.shard, str(target), record.count, record.sha256, record.bytes)
