"""Train/dev split by query group, so no query (nor a translation of it) is on both sides."""

from __future__ import annotations

import random
from collections import defaultdict

from catalog.store import Catalog


def split_by_query(cat: Catalog, dev: float = 0.1, seed: int = 0) -> dict[str, int]:
    """Assign every engagement the split of its query's group; returns engagements per split.

    Groups are drawn per source (so each data set gets its `dev` share) with a seeded shuffle of sorted
    group ids, which makes the split reproducible from (catalog, dev, seed) alone.
    """
    if not 0.0 <= dev < 1.0:
        raise ValueError(f"--dev must be in [0, 1), got {dev}")
    groups_by_source: dict[str, set[str]] = defaultdict(set)
    group_of: dict[str, str] = {}
    for qid, group, source in cat.db.execute("select id, coalesce(group_id, id), coalesce(source, '') from queries"):
        groups_by_source[source].add(group)
        group_of[qid] = group
    rng = random.Random(seed)
    dev_groups: set[str] = set()
    for source in sorted(groups_by_source):
        groups = sorted(groups_by_source[source])
        rng.shuffle(groups)
        dev_groups.update(groups[: round(len(groups) * dev)])
    cat.db.execute("drop table if exists temp.split_assign")
    cat.db.execute("create temp table split_assign (query_id text primary key, split text)")
    cat.db.conn.executemany(
        "insert into split_assign values (?, ?)",
        ((qid, "dev" if group in dev_groups else "train") for qid, group in group_of.items()),
    )
    with cat.db.conn:
        cat.db.execute(
            "update engagements set split = (select s.split from split_assign s "
            "where s.query_id = engagements.query_id)"
        )
    counts = dict(cat.db.execute("select coalesce(split, 'unsplit'), count(*) from engagements group by 1"))
    return {str(k): int(v) for k, v in counts.items()}
