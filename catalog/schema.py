"""Catalog schema: table definitions, the schema version and the explicit migrations between versions."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

# The text fields of an entity, named after the paper's pin/product encoder inputs. Any may be empty.
TEXT_FIELDS: tuple[str, ...] = (
    "title",
    "description",
    "caption",  # synthetic (GenAI) caption
    "image_caption",
    "board_titles",
    "engaged_queries",
    "canonical_description",
    "brand",
    "colors",
    "size",
    "size_type",
    "patterns",
    "materials",
    "product_types",
    "domains",
    "links",
    "rich_title",
    "rich_description",
    "bullet_points",
)

ENTITY_COLUMNS: tuple[str, ...] = ("id", "kind", "lang", "source", *TEXT_FIELDS, "updated_at")
QUERY_COLUMNS: tuple[str, ...] = ("id", "text", "lang", "group_id", "source")
ENGAGEMENT_COLUMNS: tuple[str, ...] = (
    "query_id",
    "target_id",
    "target_type",
    "kind",
    "grade",
    "weight",
    "split",
    "source",
)
TARGET_TYPES = ("entity", "query")
SPLITS = ("train", "dev")

SCHEMA_VERSION = 1


def _v1(db: sqlite_utils.Database) -> None:
    """Initial schema."""
    entity_cols: dict[str, type] = {c: str for c in ENTITY_COLUMNS}
    db["entities"].create(entity_cols, pk="id")  # type: ignore[union-attr]
    db["entities"].create_index(["kind"])  # type: ignore[union-attr]
    db["entities"].create_index(["source"])  # type: ignore[union-attr]
    db["queries"].create(  # type: ignore[union-attr]
        {"id": str, "text": str, "lang": str, "group_id": str, "source": str}, pk="id"
    )
    db["queries"].create_index(["group_id"])  # type: ignore[union-attr]
    db["engagements"].create(  # type: ignore[union-attr]
        {
            "query_id": str,
            "target_id": str,
            "target_type": str,  # 'entity' or 'query'
            "kind": str,  # engaged, relevance, translation, cites, exact, esci, ...
            "grade": float,  # graded relevance where the source has one
            "weight": float,  # training weight (counts or grade)
            "split": str,  # train / dev / NULL before `catalog split`
            "source": str,
        },
        pk=("query_id", "target_id", "target_type", "kind"),
    )
    db["engagements"].create_index(["target_id"])  # type: ignore[union-attr]
    db["engagements"].create_index(["split"])  # type: ignore[union-attr]
    db["legacy_spaces"].create(  # type: ignore[union-attr]
        {"name": str, "dim": int, "description": str}, pk="name"
    )
    db["legacy_vectors"].create(  # type: ignore[union-attr]
        {"space": str, "entity_id": str, "vector": bytes},  # vector: little-endian float32 bytes
        pk=("space", "entity_id"),
        foreign_keys=[("space", "legacy_spaces", "name")],
    )


# Migration i turns a catalog of version i-1 into version i. Append, never edit.
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {1: _v1}


def current_version(db: sqlite_utils.Database) -> int:
    """The schema version stored in the file (0 for an empty file)."""
    if "meta" not in db.table_names():
        return 0
    row = db.execute("select value from meta where key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite_utils.Database) -> int:
    """Bring `db` to SCHEMA_VERSION, one migration per transaction; returns the final version."""
    version = current_version(db)
    if version > SCHEMA_VERSION:
        from catalog.errors import CatalogError

        raise CatalogError(
            f"catalog schema version {version} is newer than this software ({SCHEMA_VERSION}); upgrade it"
        )
    while version < SCHEMA_VERSION:
        target = version + 1
        with db.conn:
            if "meta" not in db.table_names():
                db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]
            MIGRATIONS[target](db)
            db["meta"].upsert({"key": "schema_version", "value": str(target)}, pk="key")  # type: ignore[union-attr]
        version = target
    return version
