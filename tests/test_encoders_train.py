"""End to end on a tiny real catalog: train a few steps, save, load the same embeddings, resume, data rules."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from encoders_fixtures import QUESTIONS, tiny_catalog, tiny_config

import encoders
from catalog import Catalog, Home
from encoders.config import override
from encoders.data import engaged_queries, is_positive, load_tasks
from encoders.evaluate import dev_tasks, evaluate_system
from encoders.features import passage_text, query_key
from encoders.interpolate import interpolate, snapshot
from encoders.retrieval import Pools
from encoders.systems import ModelRetriever
from encoders.train import TaskSampler, Trainer, allocate, dev_score

TEXTS = ["iphone charger", "¿qué es un gato doméstico?", "star at the center"]


@pytest.fixture
def tiny_home(home: Home) -> Home:
    tiny_catalog(home)
    return home


def test_train_save_load_gives_identical_embeddings(tiny_home: Home) -> None:
    trainer = Trainer(tiny_home, tiny_config(), progress=False)
    result = trainer.run()
    assert result.steps == 4 and result.pairs == 4 * 24
    assert set(result.tasks) == {"query->pin", "query->product", "query->query", "query->legacy-toy"}
    model = encoders.load(result.out)
    assert model.checkpoint_id == result.checkpoint_id
    assert model.spaces == {"model": 256 + 256, "legacy-toy": 12}  # dense + lexical
    with Catalog(tiny_home.catalog_db, read_only=True) as cat:
        rows = list(cat.entities())
    trained = trainer.model
    trained.eval()
    for space in model.spaces:
        assert np.array_equal(model.embed_queries(TEXTS, space=space), trained.embed_queries(TEXTS, space=space))
    ent = model.embed_entities(rows)
    assert np.array_equal(ent, trained.embed_entities(rows))
    assert ent.shape == (len(rows), 512)
    assert np.allclose(np.linalg.norm(ent, axis=1), 1.0, atol=1e-5)
    # the engaged-queries enrichment travels with the checkpoint and holds train queries only
    with Catalog(tiny_home.catalog_db, read_only=True) as cat:
        dev_texts = {cat.get_queries([r["query_id"]])[r["query_id"]]["text"] for r in cat.engagements(split="dev")}
    enriched = {t for qs in model.engaged.values() for t in qs}
    assert enriched and not enriched & dev_texts


def test_anchor_block_is_trained_against_and_served(tiny_home: Home) -> None:
    cfg = override(tiny_config(), {"model": {"anchor_weight": 0.5, "anchor_in_loss": True}})
    trainer = Trainer(tiny_home, cfg, progress=False)
    result = trainer.run()
    model = encoders.load(result.out)
    assert model.spaces["model"] == 256 + 384 + 256  # dense + untuned MiniLM + lexical
    trained = trainer.model
    trained.eval()
    assert np.array_equal(model.embed_queries(TEXTS), trained.embed_queries(TEXTS))
    # the loss saw each query's untuned embedding, computed from the cached lower blocks in the same pass
    qids = sorted(trainer.anchor_cache)[:8]
    cached = torch.stack([trainer.anchor_cache[q] for q in qids]).numpy()
    fresh = model.passage.encode([trainer.query_text[q] for q in qids], passage=False)  # type: ignore[union-attr]
    assert len(trainer.anchor_cache) >= 8 and np.allclose(cached, fresh, atol=2e-2)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tiny_home: Home) -> None:
    cfg = tiny_config(steps=5)
    straight = Trainer(tiny_home, cfg, out=tiny_home.checkpoints / "straight", progress=False).run()
    out = tiny_home.checkpoints / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_home, cfg, out=out, progress=False).run(stop_after=2)
    assert (out.with_name("interrupted.resume") / "state.pt").exists()
    resumed = Trainer(tiny_home, cfg, out=out, progress=False)
    result = resumed.run()
    assert resumed.resumed and result.steps == 5
    assert not out.with_name("interrupted.resume").exists()
    a, b = encoders.load(straight.out), encoders.load(result.out)
    # the frozen-block state cache is rebuilt after a resume, batched differently, so activations differ by
    # float rounding (~1e-4 measured); a lost or repeated step moves embeddings far more than 1e-3
    assert np.allclose(a.embed_queries(TEXTS), b.embed_queries(TEXTS), atol=1e-3)


def test_grades_tasks_and_skipped_tasks(tiny_home: Home, caplog: pytest.LogCaptureFixture) -> None:
    ranges = {"hd": (1.0, 3.0), "cf": (1.0, 4.0)}
    assert is_positive({"grade": 2.0, "source": "hd"}, ranges, 0.5)
    assert not is_positive({"grade": 1.67, "source": "hd"}, ranges, 0.5)
    assert is_positive({"grade": 3.0, "source": "cf"}, ranges, 0.5)
    assert not is_positive({"grade": 2.0, "source": "cf"}, ranges, 0.5)
    assert is_positive({"grade": None, "source": "x"}, ranges, 0.5)
    assert allocate(100, {"a": 8, "b": 4, "c": 0.01}) == {"a": 65, "b": 33, "c": 2}
    with caplog.at_level(logging.INFO), Catalog(tiny_home.catalog_db, read_only=True) as cat:
        tasks = load_tasks(cat, {"query->pin": 8, "query->product": 0}, 0.5, {"toy": []})
        assert [t.name for t in tasks] == ["query->pin", "query->query"]
        enrich = engaged_queries(cat, 0.5, 32)
    assert "task query->product skipped: weight 0" in caplog.text
    assert "task query->legacy-toy skipped: no train pairs" in caplog.text
    assert all(len(v) <= 32 for v in enrich.values())


def test_pivot_pairs_tie_translations_to_the_pivot_languages_item(tiny_home: Home) -> None:
    with Catalog(tiny_home.catalog_db, read_only=True) as cat:
        plain = {t.name: set(t.pairs) for t in load_tasks(cat, {}, 0.5)}
        pivoted = {t.name: set(t.pairs) for t in load_tasks(cat, {}, 0.5, pivot="en")}
        train = {r["query_id"] for r in cat.engagements(split="train")}
    added = pivoted["query->pin"] - plain["query->pin"]
    # every Spanish train question whose English twin is a train question too gains the English paragraph
    expected = {(f"{g}-es", f"{pin}-en") for g, _, _, pin in QUESTIONS if {f"{g}-es", f"{g}-en"} <= train}
    assert added == expected and expected
    assert pivoted["query->product"] == plain["query->product"]  # ESCI queries have no groups
    assert all(q in train for q, _ in added)


def test_translations_enrich_entities_and_leave_the_whole_group_out(tiny_home: Home) -> None:
    spanish = {en: es for _, en, es, _ in QUESTIONS}
    with Catalog(tiny_home.catalog_db, read_only=True) as cat:
        own = engaged_queries(cat, 0.5, 32)
        both = engaged_queries(cat, 0.5, 32, translations=True)
        dev_texts = {cat.get_queries([r["query_id"]])[r["query_id"]]["text"] for r in cat.engagements(split="dev")}
    english = own["pin-cat-en"] + own["pin-sun-en"]
    assert english and all(t in spanish for t in english)
    for pin in ("pin-cat-en", "pin-sun-en"):
        assert both[pin][: len(own[pin])] == own[pin]  # the entity's own queries first
        assert both[pin][len(own[pin]) :] == [spanish[t] for t in own[pin]]  # then their translations
    assert not {t for qs in both.values() for t in qs} & dev_texts
    cfg = override(tiny_config(), {"model": {"entity": {"engaged_translations": True}}, "train": {"steps": 1}})
    trainer = Trainer(tiny_home, cfg, progress=False)
    trainer.run()
    qid = next(q for q, t in trainer.query_text.items() if t == english[0])
    hidden = trainer._leave_out(qid)
    assert hidden == frozenset({query_key(english[0]), query_key(spanish[english[0]])})
    feats = trainer.model.featurizer.features({"id": "pin-cat-en" if english[0] in own["pin-cat-en"] else "pin-sun-en"})
    kept = trainer.model.featurizer.collate([feats], [hidden])
    whole = trainer.model.featurizer.collate([feats])
    single = trainer.model.featurizer.collate([feats], [query_key(english[0])])
    assert whole.ids.numel() > single.ids.numel() > kept.ids.numel()  # both languages' copies left the bag


def test_max_epochs_takes_exhausted_tasks_out_of_the_mix(tiny_home: Home, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny_config(steps=500, max_epochs=2.0)
    trainer = Trainer(tiny_home, cfg, progress=False)
    with caplog.at_level(logging.INFO):
        result = trainer.run()
    sizes = result.tasks
    assert result.steps < 500  # stopped because every task had its passes, not at the step budget
    assert f"stopping at step {result.steps}" in caplog.text
    for name, n in sizes.items():
        epochs = trainer.samplers[name].epochs
        # a task is only sampled while below the cap, so it overshoots by at most one step's share
        assert 2.0 <= epochs <= 2.0 + cfg.train.batch_size / n, (name, epochs, n)
        assert f"task {name} leaves the mix" in caplog.text
    assert result.pairs == sum(trainer.samplers[t].epoch * n + trainer.samplers[t].pos for t, n in sizes.items())


class DivergingTrainer(Trainer):
    """Scrambles the entity tower after step 2, as a run that diverges would."""

    def train_step(self) -> dict[str, float]:
        logs = super().train_step()
        if self.step > 2:
            with torch.no_grad():
                for p in self.model.entity.parameters():
                    p.add_(torch.randn_like(p))
        return logs


def test_keep_best_restores_the_weights_of_the_best_dev_check(tiny_home: Home) -> None:
    # dense only: on this tiny catalog the lexical channel alone would rank the scrambled steps as well
    cfg = override(tiny_config(steps=6, eval_every=2, eval_max_queries=0, keep_best=True),
                   {"model": {"lexical": {"dim": 0}}})
    result = DivergingTrainer(tiny_home, cfg, out=tiny_home.checkpoints / "best", progress=False).run()
    record = json.loads((result.out / "config.json").read_text())["training"]
    history = record["dev_history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    scores = {h["step"]: dev_score({"tasks": {k: v for k, v in h.items() if k != "step"}}) for h in history}
    assert scores[2] > max(scores[4], scores[6])
    assert record["kept_step"] == 2 and record["steps"] == 6
    # the saved model scores what step 2 scored, not what the last step did
    model = encoders.load(result.out)
    with Catalog(tiny_home.catalog_db, read_only=True) as cat:
        tasks = dev_tasks(cat, cfg.train.min_relative_grade, None)
        pools = Pools(cat)
        again = evaluate_system(ModelRetriever(model, pools), tasks, pools)
    assert dev_score(again) == pytest.approx(scores[2], abs=1e-3)


def test_dev_score_counts_every_dev_query_the_same() -> None:
    tasks = {"big": {"nDCG@10": 0.4, "queries": 900}, "tiny": {"nDCG@10": 1.0, "queries": 1},
             "mid": {"nDCG@10": 0.7, "queries": 99}}
    assert dev_score({"tasks": tasks}) == pytest.approx((0.4 * 900 + 1.0 + 0.7 * 99) / 1000)
    assert dev_score({"tasks": {}}) != dev_score({"tasks": {}})  # NaN: nothing measured


def test_mask_known_hides_the_other_language_copy_of_a_positive(tiny_home: Home) -> None:
    cfg = override(tiny_config(steps=2), {"loss": {"mask_known": True}})
    trainer = Trainer(tiny_home, cfg, out=tiny_home.checkpoints / "masked", progress=False)
    trainer.prepare()
    known = trainer.known["query->pin"]
    pairs = dict(next(t for t in trainer.tasks if t.name == "query->pin").pairs)
    q = next(q for q in pairs if q.endswith("-es") and q.replace("-es", "-en") in pairs)
    own, other = pairs[q], pairs[q.replace("-es", "-en")]  # the Spanish and the English paragraph
    assert own != other and known.mask([q], [own, other]).tolist() == [[True, True]]
    assert trainer.train_step()["loss"] > 0  # a step runs with the masks
    assert not override(tiny_config(), {}).loss.mask_known  # off by default: the presets were measured without it


def test_run_time_limit_counts_preparation(tiny_home: Home, caplog: pytest.LogCaptureFixture) -> None:
    # preparation alone takes longer than this limit, so no step runs, and the run still ends with a checkpoint
    cfg = tiny_config(steps=4, run_time_limit_s=1e-3)
    with caplog.at_level(logging.WARNING, logger="encoders.train"):
        result = Trainer(tiny_home, cfg, out=tiny_home.checkpoints / "limited", progress=False).run()
    assert result.steps == 0 and encoders.load(result.out).checkpoint_id == result.checkpoint_id
    assert "time limit reached at step 0 of 4" in caplog.text
    with pytest.raises(encoders.errors.ConfigError, match="run_time_limit_s"):
        encoders.config.validate(tiny_config(run_time_limit_s=-1.0))


def test_interpolate_moves_weights_along_the_line_and_leaves_heads_alone(tiny_home: Home) -> None:
    trainer = Trainer(tiny_home, tiny_config(steps=2), out=tiny_home.checkpoints / "line", progress=False)
    trainer.prepare()
    model = trainer.model
    start = snapshot(model)
    assert start and not any(n.startswith("query.heads.") for n in start)
    assert "entity.bag.table.weight" in start and "query.proj.weight" in start
    for _ in range(2):
        trainer.train_step()
    end = snapshot(model)
    head = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("query.heads.")}
    name = "query.proj.weight"
    assert not torch.equal(start[name], end[name])  # training moved it
    interpolate(model, start, end, 0.0)
    assert all(torch.equal(p, start[n]) for n, p in model.named_parameters() if n in start)
    interpolate(model, start, end, 0.5)
    assert torch.allclose(dict(model.named_parameters())[name], (start[name] + end[name]) / 2, atol=1e-6)
    interpolate(model, start, end, 1.0)
    assert all(torch.equal(p, end[n]) for n, p in model.named_parameters() if n in end)
    assert all(torch.equal(p, head[n]) for n, p in model.named_parameters() if n in head)
    with pytest.raises(ValueError, match="alpha"):
        interpolate(model, start, end, 1.5)
    with pytest.raises(ValueError, match="lack"):
        interpolate(model, {}, end, 0.5)


def test_interpolation_keeps_the_point_with_the_best_dev_score(tiny_home: Home) -> None:
    # a run that diverges after step 2: its start (the untuned backbone's ranking) scores better than its end
    cfg = override(tiny_config(steps=4, final_eval=True, eval_max_queries=0, interpolate=[0.0, 0.5]),
                   {"model": {"lexical": {"dim": 0}}})
    result = DivergingTrainer(tiny_home, cfg, out=tiny_home.checkpoints / "wise", progress=False).run()
    record = json.loads((result.out / "config.json").read_text())["training"]
    tried = {t["alpha"]: t["score"] for t in record["interpolation"]["tried"]}
    assert sorted(tried) == [0.0, 0.5, 1.0]
    chosen = record["interpolation"]["alpha"]
    assert tried[chosen] == max(tried.values()) and chosen < 1.0
    model = encoders.load(result.out)
    with Catalog(tiny_home.catalog_db, read_only=True) as cat:
        pools = Pools(cat)
        again = evaluate_system(ModelRetriever(model, pools), dev_tasks(cat, 0.5, None), pools)
    assert dev_score(again) == pytest.approx(tried[chosen], abs=1e-3)


def test_task_sampler_groups_each_take_and_still_sees_every_pair_once_per_epoch() -> None:
    groups = ["a"] * 12 + ["b"] * 30 + ["c"] * 6
    sampler = TaskSampler(len(groups), 0, groups)
    seen: list[int] = []
    for _ in range(8):  # every group's size is a multiple of 6: no take straddles two groups
        took = sampler.take(6).tolist()
        assert len({groups[i] for i in took}) == 1
        seen += took
    assert sorted(seen) == list(range(len(groups))) and sampler.epochs == 1.0
    odd = TaskSampler(len(groups), 1, groups)
    seen = [i for _ in range(12) for i in odd.take(4).tolist()]  # 48 = one epoch in takes of 4
    assert sorted(seen) == list(range(len(groups)))
    with pytest.raises(ValueError, match="labels"):
        TaskSampler(3, 0, ["a"])


def test_language_batches_draw_pairs_and_negatives_from_one_language(tiny_home: Home) -> None:
    cfg = override(tiny_config(steps=2), {"train": {"language_batches": ["query->pin"]}})
    trainer = Trainer(tiny_home, cfg, out=tiny_home.checkpoints / "langs", progress=False)
    trainer.prepare()
    task = next(t for t in trainer.tasks if t.name == "query->pin")
    langs = {eid: lang for eid, lang in zip(trainer.entity_ids["pin"], trainer.entity_langs["pin"], strict=True)}
    assert len(set(langs.values())) == 2  # the fixture's pins are in two languages
    sampler = trainer.samplers["query->pin"]
    assert sampler.groups is not None and trainer.samplers["query->product"].groups is None
    pairs = [task.pairs[i] for i in sampler.take(2)]
    lang = langs[pairs[0][1]]
    assert {langs[t] for _, t in pairs} == {lang}
    negatives = trainer._negatives(task, pairs, 50)
    assert {trainer.entity_langs["pin"][i] for i in negatives} == {lang}
    assert trainer.train_step()["query->pin"] > 0
    with pytest.raises(encoders.errors.ConfigError, match="language_batches"):
        encoders.config.validate(override(tiny_config(), {"train": {"language_batches": ["query->nothing"]}}))


def test_anchor_window_reads_more_of_long_entity_text_than_the_tower(tiny_home: Home) -> None:
    cfg = override(tiny_config(steps=0), {"model": {"anchor_weight": 2.0, "anchor_max_length": 64,
                                                    "entity": {"text_input_max_length": 8}}})
    trainer = Trainer(tiny_home, cfg, out=tiny_home.checkpoints / "window", progress=False)
    trainer.prepare()
    model = trainer.model
    model.eval()
    assert model.passage is not None
    with Catalog(tiny_home.catalog_db, read_only=True) as cat:
        rows = list(cat.entities())
    texts = [passage_text(r, model.cfg.entity.fields) for r in rows]
    tower, anchor = model.text_vectors(rows), model.anchor_vectors(rows)
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # bf16 batches differ in their last digits
        return np.asarray((a * b).sum(axis=1))

    assert cosine(anchor, model.passage.encode(texts, max_length=64)).min() > 0.999
    assert cosine(tower, model.passage.encode(texts)).min() > 0.999  # the tower keeps its 8 tokens
    prefix = model.backbone_info.passage_prefix
    long = np.array([len(model.query.tokenizer(prefix + t)["input_ids"]) > 8 for t in texts])
    assert long.sum() > len(texts) // 2
    same = cosine(anchor, tower)
    assert same[long].max() < 0.99 and same[~long].min() > 0.999  # only texts past 8 tokens differ
    served = model.embed_entities(rows)[:, 256 : 256 + 384]  # the anchor block of the served vectors
    assert np.allclose(served / np.linalg.norm(served, axis=1, keepdims=True), anchor, atol=1e-5)
    with pytest.raises(encoders.errors.ConfigError, match="anchor_in_loss"):
        encoders.config.validate(override(cfg, {"model": {"anchor_in_loss": True}}))
    with pytest.raises(encoders.errors.ConfigError, match="positions"):
        Trainer(tiny_home, override(cfg, {"model": {"anchor_max_length": 4096}}),
                out=tiny_home.checkpoints / "too-long", progress=False).prepare()
