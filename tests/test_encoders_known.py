"""Known positives: items tied to a query's group by the training pairs become batch masks."""

from __future__ import annotations

import torch

from encoders.known import KnownPositives

PAIRS = [("q-de", "para-de"), ("q-en", "para-en"), ("q2-en", "para-en"), ("shoe", "p1"), ("shoe", "p2")]
GROUPS = {"q-de": "q", "q-en": "q", "q2-en": "q2"}


def test_translations_share_their_items_and_other_groups_do_not() -> None:
    kp = KnownPositives(PAIRS, GROUPS)
    mask = kp.mask(["q-de", "q2-en"], ["para-en", "para-de", "p1"])
    # the German question's group also holds the English question, so the English paragraph is a known positive
    assert mask.tolist() == [[True, True, False], [True, False, False]]


def test_every_item_of_a_query_with_several_positives_is_known() -> None:
    kp = KnownPositives(PAIRS, GROUPS)
    assert kp.mask(["shoe"], ["p2", "p1", "para-de"]).tolist() == [[True, True, False]]


def test_unknown_queries_and_items_are_never_masked() -> None:
    kp = KnownPositives(PAIRS, {})
    mask = kp.mask(["nobody", "q-de"], ["para-de", "unseen"])
    assert mask.dtype == torch.bool and mask.tolist() == [[False, False], [True, False]]
    # without groups a query is its own group: the English paragraph is not the German question's positive
    assert kp.mask(["q-de"], ["para-en"]).tolist() == [[False]]
