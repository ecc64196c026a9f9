"""Reading GGUF model files: validation, metadata and identity.

``validate(path)`` checks everything that can be checked without loading the
model, and returns a :class:`GgufInfo`. Every failure is a
:class:`~ggufbench.errors.ModelFileError` whose message is one sentence naming
the file and the fix. Metadata is parsed by the ``gguf`` package (llama.cpp's
own reader); this module only sniffs the magic and version first, to say what a
file is when it is not a GGUF, and bounds every read by the file's size, so a
truncated download is reported instead of crashing the reader. Tensor data is
never read: offsets and sizes are enough, so a 40 GB file validates as fast as
a small one.

``sha256_of(path)`` hashes a file in 8 MiB blocks and remembers the answer in
``$GGUFBENCH_CACHE/sha256.sqlite`` (default ``~/.cache/ggufbench``), keyed by
(real path, size, mtime_ns, inode), so a 70B file is hashed once per change.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sqlite3
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, LlamaFileType
from gguf.constants import GGUFValueType
from gguf.gguf_reader import READER_SUPPORTED_VERSIONS, ReaderField

from ggufbench.errors import ModelFileError
from ggufbench.footprint import Footprint, footprint, footprint_bytes

__all__ = [
    "Footprint",
    "GgufInfo",
    "cache_root",
    "footprint",
    "footprint_bytes",
    "sha256_of",
    "validate",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = tuple(int(v) for v in READER_SUPPORTED_VERSIONS)
HASH_BLOCK_BYTES = 8 * 1024 * 1024
LONG_STRING_ARRAY = 1024  # string arrays at least this long are sized, not read
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF file says about its model; sizes in bytes, counts summed over shards."""

    path: Path
    size_bytes: int
    gguf_version: int
    architecture: str
    name: str | None
    n_params: int
    n_tensors: int
    tensor_bytes: int
    quant: str
    bits_per_weight: float
    context_length: int | None
    n_layer: int | None
    n_embd: int | None
    n_ff: int | None
    n_head: int | None
    n_head_kv: int | None
    head_dim_k: int | None
    head_dim_v: int | None
    vocab_size: int | None
    sliding_window: int | None
    n_swa_layers: int | None
    add_bos_token: bool | None
    bos_token_id: int | None
    eos_token_id: int | None
    n_shards: int = 1
    chat_template: str | None = field(default=None, repr=False)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def to_dict(self, *, include_chat_template: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; the chat template text only when asked for."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["has_chat_template"] = self.has_chat_template
        if not include_chat_template:
            del data["chat_template"]
        return data


def validate(path: Path) -> GgufInfo:
    """Check that ``path`` is a complete, readable GGUF model and return its metadata."""
    path = Path(path).absolute()
    size = _sniff(path)
    reader = _open(path, size)
    shards = [(path, size, reader)]
    n_shards = _int(_value(reader, "split.count")) or 1
    if n_shards > 1:
        shards += _other_shards(path, reader, n_shards)
    return _info(path, shards, n_shards)


# --- the sniff: what is this file? -------------------------------------------


def _sniff(path: Path) -> int:
    """Return the size of ``path`` once it is a readable file with a supported GGUF header."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ModelFileError(
                f"{path} is a broken symbolic link to {os.readlink(path)}; "
                "fix the link or point `path` at the model file itself"
            ) from None
        raise ModelFileError(f"{path} does not exist; check the model's `path`") from None
    except OSError as exc:
        raise ModelFileError(f"{path} cannot be reached ({_reason(exc)}); check the path") from exc
    if stat.S_ISDIR(st.st_mode):
        inside = sorted(p.name for p in path.glob("*.gguf"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise ModelFileError(
            f"{path} is a folder, not a GGUF file; set `path` to the .gguf file inside it{hint}"
        )
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{path} is not a regular file; point `path` at a .gguf model file")
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise ModelFileError(
            f"{path} cannot be read ({_reason(exc)}); make it readable (chmod a+r) "
            "or check its disk"
        ) from exc
    if not head:
        raise ModelFileError(f"{path} is empty (0 bytes); download the model again")
    if head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{path} is not a GGUF file: {_describe(head)}")
    if len(head) < 24:
        raise ModelFileError(
            f"{path} is truncated: it ends inside the GGUF header after {len(head)} bytes; "
            "re-download it"
        )
    version = int.from_bytes(head[4:8], "little")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        version = int.from_bytes(head[4:8], "big")
    if version not in SUPPORTED_VERSIONS:
        fix = (
            "upgrade the gguf package"
            if version > max(SUPPORTED_VERSIONS)
            else "re-convert it with a current llama.cpp"
        )
        raise ModelFileError(
            f"{path} uses GGUF version {version}, but only versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))} can be read; {fix}"
        )
    return st.st_size


_NOT_GGUF = (
    (
        b"version https://git-lfs",
        "it is a Git LFS pointer, not the model; fetch it with `git lfs pull`",
    ),
    (b"<!doctype html", "it is an HTML page, probably a failed download; download the model again"),
    (b"<html", "it is an HTML page, probably a failed download; download the model again"),
    (b"lmgg", "it is an old GGML file; convert it to GGUF with llama.cpp's conversion scripts"),
    (b"fmgg", "it is an old GGML file; convert it to GGUF with llama.cpp's conversion scripts"),
    (b"tjgg", "it is an old GGML file; convert it to GGUF with llama.cpp's conversion scripts"),
    (
        b"PK\x03\x04",
        "it is a zip archive (a PyTorch checkpoint?); convert it with llama.cpp's "
        "convert_hf_to_gguf.py",
    ),
)


def _describe(head: bytes) -> str:
    """Say what a non-GGUF file starts with, and what to do about it."""
    lowered = head.lstrip().lower()
    for magic, meaning in _NOT_GGUF:
        if lowered.startswith(magic.lower()):
            return meaning
    if head[8:10] == b'{"':
        return "it looks like a safetensors file; convert it with llama.cpp's convert_hf_to_gguf.py"
    text = head.decode("utf-8", errors="replace")
    readable = sum(ch != "\ufffd" and (ch.isprintable() or ch in "\t\r\n") for ch in text)
    if readable >= 0.9 * len(text):
        first_line = text.strip().splitlines()[0] if text.strip() else text
        return (
            f"it starts with the text {first_line[:32]!r} instead of the GGUF magic; "
            "point `path` at a .gguf model file"
        )
    return (
        f"it starts with the bytes {head[:4].hex(' ')} instead of 47 47 55 46 ('GGUF'); "
        "point `path` at a .gguf model file"
    )


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


# --- the reader, bounded by the file's size ------------------------------------


class _ReadPastEnd(Exception):
    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class _TensorsPastEnd(_ReadPastEnd):
    pass


class _UnknownTensorType(Exception):
    def __init__(self, tensor: str, raw_type: int) -> None:
        super().__init__(tensor, raw_type)
        self.tensor = tensor
        self.raw_type = raw_type


class _BoundedReader(GGUFReader):
    """llama.cpp's reader, refusing any read beyond the end of the file.

    Reads go through a plain ndarray view of the memory map (about 3x faster to
    parse than through ``np.memmap``); tensors are only sized, never touched.
    """

    _flat: npt.NDArray[np.uint8] | None = None

    def _bytes(self) -> npt.NDArray[np.uint8]:
        if self._flat is None:
            self._flat = self.data.view(np.ndarray)
        return self._flat

    def _get(
        self,
        offset: int,
        dtype: npt.DTypeLike,
        count: int = 1,
        override_order: None | Literal["I", "S", "<"] = None,
    ) -> npt.NDArray[Any]:
        flat = self._bytes()
        dt = np.dtype(dtype)
        end = int(offset) + dt.itemsize * int(count)
        if end > flat.shape[0]:
            raise _ReadPastEnd(end)
        arr = flat[int(offset) : end].view(dt)
        order = self.byte_order if override_order is None else override_order
        return arr if order == "I" else arr.view(arr.dtype.newbyteorder(order))

    def _get_field_parts(
        self, orig_offs: int, raw_type: int
    ) -> tuple[int, list[npt.NDArray[Any]], list[int], list[GGUFValueType]]:
        """Arrays in one piece instead of one numpy view per element.

        The upstream reader walks an array element by element: for a 262k-token
        vocabulary (tokens, scores, types) that is about a million small reads and
        seconds of preflight. A numeric array becomes one part, which
        ``contents()`` reads the same way. A long string array is only walked
        for its length (its text is never needed here); its ``data`` is empty.
        """
        if raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        start = orig_offs + 12
        count = int(alen[0])
        types = [GGUFValueType.ARRAY, GGUFValueType(int(raw_itype[0]))]
        nptype = self.gguf_scalar_to_np.get(types[1])
        if nptype is not None:
            values = self._get(start, nptype, count)
            return 12 + int(values.nbytes), [raw_itype, alen, values], [2], types
        if types[1] != GGUFValueType.STRING or count < LONG_STRING_ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        end = self._skip_strings(start, count)
        blob = self._get(start, np.uint8, end - start)
        return end - orig_offs, [raw_itype, alen, blob], [], types

    def _skip_strings(self, offs: int, count: int) -> int:
        """The offset after ``count`` length-prefixed strings starting at ``offs``."""
        flat = self._bytes()
        raw = memoryview(flat.data)
        size = flat.shape[0]
        native = sys.byteorder == "little"
        order: Literal["little", "big"] = "little" if native == (self.byte_order == "I") else "big"
        for _ in range(count):
            if offs + 8 > size:
                raise _ReadPastEnd(offs + 8)
            offs += 8 + int.from_bytes(raw[offs : offs + 8], order)
        if offs > size:
            raise _ReadPastEnd(offs)
        return offs

    def _build_tensors(self, start_offs: int, fields: list[ReaderField]) -> None:
        end = start_offs
        for info in fields:
            dims, raw_type, offset = info.parts[3], info.parts[4], info.parts[5]
            try:
                qtype = GGMLQuantizationType(int(raw_type[0]))
            except ValueError:
                raise _UnknownTensorType(info.name, int(raw_type[0])) from None
            block, type_size = GGML_QUANT_SIZES[qtype]
            n_bytes = math.prod(int(d) for d in dims) * type_size // block
            end = max(end, start_offs + int(offset[0]) + n_bytes)
        if end > self.data.shape[0]:
            raise _TensorsPastEnd(end)
        super()._build_tensors(start_offs, fields)


def _open(path: Path, size: int) -> _BoundedReader:
    """Parse ``path`` with the bounded reader, translating its failures into sentences."""
    try:
        return _BoundedReader(path)
    except _TensorsPastEnd as exc:
        raise ModelFileError(
            f"{path} is truncated: tensor data needs {exc.needed:,} bytes but the file has "
            f"{size:,}; re-download it"
        ) from exc
    except _ReadPastEnd as exc:
        if exc.needed > 2 * size + (1 << 20):  # no cut explains that: a length field is garbage
            raise ModelFileError(
                f"{path} has corrupt metadata (a length field points to byte {exc.needed:,} "
                f"of a {size:,}-byte file); re-download or re-convert it"
            ) from exc
        raise ModelFileError(
            f"{path} is truncated or corrupt: its metadata runs past the end of the file "
            f"(byte {exc.needed:,} of {size:,}); re-download it"
        ) from exc
    except _UnknownTensorType as exc:
        raise ModelFileError(
            f"{path} has tensor {exc.tensor!r} of type {exc.raw_type}, which the installed gguf "
            "package does not know; upgrade gguf, or re-download the file if it is corrupt"
        ) from exc
    except OSError as exc:
        raise ModelFileError(f"{path} cannot be read ({_reason(exc)}); check its disk") from exc
    except (ValueError, KeyError, IndexError, OverflowError, TypeError, MemoryError) as exc:
        detail = " ".join(str(exc).split())[:100] or type(exc).__name__
        raise ModelFileError(
            f"{path} has corrupt metadata ({detail}); re-download or re-convert it"
        ) from exc


def _other_shards(
    path: Path, first: _BoundedReader, n_shards: int
) -> list[tuple[Path, int, _BoundedReader]]:
    """The shards after the first of a split model (``name-00001-of-00003.gguf``)."""
    match = _SHARD_NAME.match(path.name)
    shard_no = _int(_value(first, "split.no")) or 0
    if shard_no != 0:
        first_name = f"{match['prefix']}-00001-of-{match['count']}.gguf" if match else "its first"
        raise ModelFileError(
            f"{path} is shard {shard_no + 1} of a {n_shards}-part model; "
            f"set `path` to {first_name} shard"
        )
    if match is None:
        raise ModelFileError(
            f"{path} is the first of {n_shards} shards, but its name does not end in "
            f"-00001-of-{n_shards:05d}.gguf, so the others cannot be found; restore the "
            "shards' original names"
        )
    shards = []
    for number in range(2, n_shards + 1):
        other = path.with_name(f"{match['prefix']}-{number:05d}-of-{n_shards:05d}.gguf")
        if not other.exists():
            raise ModelFileError(
                f"{path} is shard 1 of {n_shards}, but {other.name} is missing beside it; "
                "download every shard into the same folder"
            )
        size = _sniff(other)
        shards.append((other, size, _open(other, size)))
    return shards


# --- metadata -------------------------------------------------------------------


def _value(reader: GGUFReader, key: str) -> Any:
    found = reader.fields.get(key)
    return None if found is None else found.contents()


def _int(value: Any) -> int | None:
    """An integer hyperparameter; per-layer arrays give their largest value."""
    if isinstance(value, list):
        value = max(value, default=None)
    return None if value is None else int(value)


def _info(path: Path, shards: list[tuple[Path, int, _BoundedReader]], n_shards: int) -> GgufInfo:
    try:
        return _extract(path, shards, n_shards)
    except (ValueError, TypeError, IndexError) as exc:  # e.g. a string that is not UTF-8
        detail = " ".join(str(exc).split())[:100] or type(exc).__name__
        raise ModelFileError(
            f"{path} has corrupt metadata ({detail}); re-download or re-convert it"
        ) from exc


def _extract(path: Path, shards: list[tuple[Path, int, _BoundedReader]], n_shards: int) -> GgufInfo:
    reader = shards[0][2]
    arch = _value(reader, "general.architecture")
    if not arch:
        raise ModelFileError(
            f"{path} has no general.architecture key, so llama.cpp cannot load it; re-convert it"
        )
    kind = _value(reader, "general.type")
    if kind == "adapter" or arch == "clip":
        what = "a LoRA adapter" if kind == "adapter" else "a multimodal projector (mmproj)"
        raise ModelFileError(f"{path} is {what}, not a language model; point `path` at the model")
    tensors = [t for _, _, r in shards for t in r.tensors]
    if not tensors:
        raise ModelFileError(f"{path} holds no tensors (a vocabulary-only file?); use a model file")

    def hp(key: str) -> int | None:
        return _int(_value(reader, f"{arch}.{key}"))

    n_params = sum(int(t.n_elements) for t in tensors)
    tensor_bytes = sum(int(t.n_bytes) for t in tensors)
    n_layer, n_embd, n_head = hp("block_count"), hp("embedding_length"), hp("attention.head_count")
    per_head = n_embd // n_head if n_embd and n_head else None
    key_dims = [d for d in (hp("attention.key_length"), hp("attention.key_length_swa")) if d]
    value_dims = [d for d in (hp("attention.value_length"), hp("attention.value_length_swa")) if d]
    bos = _value(reader, "tokenizer.ggml.add_bos_token")
    vocab = hp("vocab_size")
    if vocab is None and "tokenizer.ggml.tokens" in reader.fields:
        vocab = int(reader.fields["tokenizer.ggml.tokens"].parts[4][0])  # the array's length
    return GgufInfo(
        path=path,
        size_bytes=sum(size for _, size, _ in shards),
        gguf_version=int(_value(reader, "GGUF.version")),
        architecture=str(arch),
        name=_value(reader, "general.name"),
        n_params=n_params,
        n_tensors=len(tensors),
        tensor_bytes=tensor_bytes,
        quant=_quant_name(_value(reader, "general.file_type"), tensors),
        bits_per_weight=8 * tensor_bytes / n_params if n_params else 0.0,
        context_length=hp("context_length"),
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=hp("feed_forward_length"),
        n_head=n_head,
        n_head_kv=hp("attention.head_count_kv") or n_head,
        head_dim_k=max(key_dims, default=per_head),
        head_dim_v=max(value_dims, default=per_head),
        vocab_size=vocab,
        sliding_window=hp("attention.sliding_window"),
        n_swa_layers=_swa_layers(
            _value(reader, f"{arch}.attention.sliding_window_pattern"), n_layer
        ),
        add_bos_token=None if bos is None else bool(bos),
        bos_token_id=_int(_value(reader, "tokenizer.ggml.bos_token_id")),
        eos_token_id=_int(_value(reader, "tokenizer.ggml.eos_token_id")),
        n_shards=n_shards,
        chat_template=_value(reader, "tokenizer.chat_template") or None,
    )


def _quant_name(file_type: Any, tensors: list[Any]) -> str:
    """``general.file_type`` as llama.cpp names it (Q4_K_M), else the dominant tensor type."""
    if file_type is not None:
        with contextlib.suppress(ValueError):
            name = LlamaFileType(int(file_type) & ~LlamaFileType.GUESSED).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    weight_bytes: Counter[str] = Counter()
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            weight_bytes[tensor.tensor_type.name] += int(tensor.n_bytes)
    return weight_bytes.most_common(1)[0][0] if weight_bytes else "unknown"


def _swa_layers(pattern: Any, n_layer: int | None) -> int | None:
    """How many layers use sliding-window attention, when the metadata says so.

    A list gives one flag per layer; a number ``p`` means every ``p``-th layer
    is a full-attention layer (llama.cpp's ``set_swa_pattern``).
    """
    if isinstance(pattern, list):
        return sum(bool(flag) for flag in pattern)
    if pattern is None or n_layer is None:
        return None
    period = int(pattern)
    return sum(period == 0 or layer % period < period - 1 for layer in range(n_layer))


# --- sha256, cached ---------------------------------------------------------------


def cache_root() -> Path:
    """ggufbench's per-user cache folder: $GGUFBENCH_CACHE or ~/.cache/ggufbench."""
    return Path(os.environ.get("GGUFBENCH_CACHE") or Path.home() / ".cache" / "ggufbench")


def sha256_of(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    """The file's sha256 (hex), from the cache when the file is unchanged.

    ``progress(done_bytes, total_bytes)`` is called after each block when hashing.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise ModelFileError(f"{path} does not exist; check the model's `path`") from exc
        raise ModelFileError(f"{path} cannot be read ({_reason(exc)}); check its disk") from exc
    key = (real, st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _cache_get(key)
    if cached is not None:
        return cached
    digest = _hash_file(Path(real), st, progress)
    _cache_put(key, digest)
    return digest


def _hash_file(
    path: Path, before: os.stat_result, progress: Callable[[int, int], None] | None
) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    done = 0
    try:
        with path.open("rb", buffering=0) as fh:
            while n := fh.readinto(buffer):
                digest.update(view[:n])
                done += n
                if progress is not None:
                    progress(done, before.st_size)
            after = os.fstat(fh.fileno())
    except OSError as exc:
        raise ModelFileError(f"{path} cannot be read ({_reason(exc)}); check its disk") from exc
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    ) or done != before.st_size:
        raise ModelFileError(
            f"{path} changed while it was being hashed; wait until it is fully written"
        )
    return digest.hexdigest()


_Key = tuple[str, int, int, int]


@contextlib.contextmanager
def _cache_db() -> Iterator[sqlite3.Connection]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(root / "sha256.sqlite", timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS file_sha256 (realpath TEXT PRIMARY KEY, "
            "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, "
            "sha256 TEXT NOT NULL, hashed_at REAL NOT NULL)"
        )
        yield conn
    finally:
        conn.close()


def _cache_get(key: _Key) -> str | None:
    """The cached hash for this exact (path, size, mtime, inode), or None; never fails."""
    try:
        with _cache_db() as conn:
            row = conn.execute(
                "SELECT sha256 FROM file_sha256 "
                "WHERE realpath = ? AND size = ? AND mtime_ns = ? AND inode = ?",
                key,
            ).fetchone()
    except (sqlite3.Error, OSError):
        return None
    return None if row is None else str(row[0])


def _cache_put(key: _Key, digest: str) -> None:
    """Remember a hash; a cache that cannot be written only costs a re-hash later."""
    with contextlib.suppress(sqlite3.Error, OSError), _cache_db() as conn, conn:
        conn.execute(
            "INSERT OR REPLACE INTO file_sha256 "
            "(realpath, size, mtime_ns, inode, sha256, hashed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (*key, digest, time.time()),
        )
