"""GGUF validation, metadata, sha256 cache and memory footprint, on tiny files written here."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from ggufbench import gguf_file
from ggufbench.cli import inspect_cmd
from ggufbench.errors import ModelFileError
from ggufbench.footprint import footprint, footprint_bytes
from ggufbench.gguf_file import GgufInfo, sha256_of, validate

Q8_0 = gguf.GGMLQuantizationType.Q8_0
N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_VOCAB, N_CTX_TRAIN = 2, 64, 4, 2, 16, 256


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUFBENCH_CACHE", str(tmp_path / "cache"))


def write_model(
    path: Path,
    *,
    file_type: gguf.LlamaFileType | None = gguf.LlamaFileType.MOSTLY_Q8_0,
    extra_kv: dict[str, int] | None = None,
    split_max_tensors: int = 0,
    merges: int = 0,
) -> Path:
    """A tiny llama-shaped GGUF: Q8_0 matrices, f32 norms, a vocabulary and a chat template."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    writer.add_name("tiny")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_block_count(N_LAYER)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(2 * N_EMBD)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    if file_type is not None:
        writer.add_file_type(int(file_type))
    for key, value in (extra_kv or {}).items():
        writer.add_uint32(key, value)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(N_VOCAB)])
    if merges:
        writer.add_token_merges([f"t{i} t{i + 1}" for i in range(merges)])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    writer.add_tensor(
        "token_embd.weight",
        gguf.quants.quantize(rng.standard_normal((N_VOCAB, N_EMBD), dtype=np.float32), Q8_0),
        raw_dtype=Q8_0,
    )
    for layer in range(N_LAYER):
        for name in ("attn_q", "attn_output"):
            matrix = rng.standard_normal((N_EMBD, N_EMBD), dtype=np.float32)
            writer.add_tensor(
                f"blk.{layer}.{name}.weight", gguf.quants.quantize(matrix, Q8_0), raw_dtype=Q8_0
            )
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# A window of 8 tokens on every second layer (pattern 2: layer 0 slides, layer 1 is full).
SWA_KV = {"llama.attention.sliding_window": 8, "llama.attention.sliding_window_pattern": 2}
N_PARAMS = N_VOCAB * N_EMBD + N_LAYER * (2 * N_EMBD * N_EMBD + N_EMBD)
Q8_BYTES = N_VOCAB * N_EMBD + N_LAYER * 2 * N_EMBD * N_EMBD  # elements, 34 bytes per 32
TENSOR_BYTES = Q8_BYTES * 34 // 32 + N_LAYER * N_EMBD * 4


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "tiny.gguf")


def error_of(path: Path) -> ModelFileError:
    with pytest.raises(ModelFileError) as caught:
        validate(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message and ";" in message  # names file and fix
    return caught.value


# --- metadata -------------------------------------------------------------------------


def test_validate_reads_the_metadata(model: Path) -> None:
    info = validate(model)
    assert info.path == model and info.size_bytes == model.stat().st_size
    assert (info.architecture, info.name, info.quant) == ("llama", "tiny", "Q8_0")
    assert info.n_params == N_PARAMS and info.tensor_bytes == TENSOR_BYTES
    assert info.bits_per_weight == pytest.approx(8 * TENSOR_BYTES / N_PARAMS)
    assert info.context_length == N_CTX_TRAIN and info.n_layer == N_LAYER
    assert (info.n_head, info.n_head_kv, info.n_embd, info.n_ff) == (N_HEAD, N_HEAD_KV, 64, 128)
    assert info.head_dim_k == info.head_dim_v == N_EMBD // N_HEAD
    assert info.vocab_size == N_VOCAB
    assert (info.add_bos_token, info.bos_token_id, info.eos_token_id) == (True, 1, 2)
    assert info.has_chat_template and "messages" in (info.chat_template or "")
    assert "chat_template=" not in repr(info)


def test_to_dict_is_json_and_leaves_the_template_out_unless_asked(model: Path) -> None:
    info = validate(model)
    data = json.loads(json.dumps(info.to_dict()))
    assert data["path"] == str(model) and data["quant"] == "Q8_0"
    assert data["has_chat_template"] is True and "chat_template" not in data
    assert "messages" in info.to_dict(include_chat_template=True)["chat_template"]


def test_quant_falls_back_to_the_dominant_tensor_type(tmp_path: Path) -> None:
    info = validate(write_model(tmp_path / "nofiletype.gguf", file_type=None))
    assert info.quant == "Q8_0"


def test_sliding_window_pattern_counts_swa_layers(tmp_path: Path) -> None:
    info = validate(write_model(tmp_path / "swa.gguf", extra_kv=SWA_KV))
    assert info.sliding_window == 8 and info.n_swa_layers == 1  # layer 0 slides, layer 1 is full


def test_split_model_is_read_whole_from_its_first_shard(tmp_path: Path) -> None:
    write_model(tmp_path / "split.gguf", split_max_tensors=3)
    shards = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert len(shards) == 3
    info = validate(shards[0])
    assert info.n_shards == 3 and info.n_params == N_PARAMS
    assert info.size_bytes == sum(p.stat().st_size for p in shards)
    assert "set `path` to split-00001-of-00003.gguf" in str(error_of(shards[1]))
    shards[2].unlink()
    assert "split-00003-of-00003.gguf is missing" in str(error_of(shards[0]))


# --- bad files ---------------------------------------------------------------------------


def test_truncated_file_says_how_many_bytes_are_missing(model: Path, tmp_path: Path) -> None:
    size = model.stat().st_size
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.read_bytes()[: size // 2 + 100])
    error = error_of(cut)
    needs = f"tensor data needs {size:,} bytes but the file has {size // 2 + 100:,}"
    assert f"is truncated: {needs}" in str(error)
    assert "re-download it" in str(error) and error.__cause__ is not None


def test_file_cut_inside_the_metadata_is_truncated(model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "header.gguf"
    cut.write_bytes(model.read_bytes()[:200])
    assert "is truncated or corrupt: its metadata runs past the end" in str(error_of(cut))


def test_long_string_arrays_are_sized_and_a_cut_inside_one_is_caught(tmp_path: Path) -> None:
    from ggufbench.gguf_file import LONG_STRING_ARRAY

    path = write_model(tmp_path / "merges.gguf", merges=3 * LONG_STRING_ARRAY)
    info = validate(path)
    assert info.vocab_size == N_VOCAB and info.n_tensors == 1 + 3 * N_LAYER
    data = path.read_bytes()
    inside = data.index(b"t2000 t2001")  # well inside the merges array
    cut = tmp_path / "cut-in-merges.gguf"
    cut.write_bytes(data[:inside])
    assert "is truncated or corrupt: its metadata runs past the end" in str(error_of(cut))


def test_text_file_named_gguf_says_what_it_starts_with(tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("hello, this is not a model\nsecond line\n")
    assert "is not a GGUF file: it starts with the text 'hello, this is not a model'" in str(
        error_of(text)
    )


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n", "Git LFS pointer"),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "HTML page"),
        (b"lmgg" + bytes(60), "old GGML file"),
        (bytes(range(200, 256)), "starts with the bytes c8 c9 ca cb"),
    ],
    ids=["git-lfs", "html", "ggml", "binary"],
)
def test_other_non_gguf_files_are_named(tmp_path: Path, head: bytes, expected: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(head)
    assert expected in str(error_of(path))


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist; check the model's `path`" in str(error_of(tmp_path / "nope.gguf"))


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.gguf"
    link.symlink_to(tmp_path / "gone.gguf")
    assert "broken symbolic link" in str(error_of(link))


def test_directory_lists_the_gguf_files_inside(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.gguf").touch()
    assert "is a folder, not a GGUF file" in str(error := error_of(folder))
    assert "a.gguf" in str(error)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    empty.touch()
    assert "is empty" in str(error_of(empty))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(model: Path) -> None:
    model.chmod(0)
    try:
        assert "cannot be read (permission denied)" in str(error_of(model))
    finally:
        model.chmod(0o644)


@pytest.mark.parametrize(("version", "fix"), [(1, "re-convert it"), (99, "upgrade the gguf")])
def test_unsupported_version(model: Path, version: int, fix: str) -> None:
    data = bytearray(model.read_bytes())
    data[4:8] = version.to_bytes(4, "little")
    model.write_bytes(data)
    assert f"uses GGUF version {version}" in str(error := error_of(model)) and fix in str(error)


def test_unreadable_file_even_for_root(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    assert "cannot be read (permission denied); make it readable" in str(error_of(model))


def test_garbage_length_field_is_corrupt_not_truncated(model: Path) -> None:
    data = bytearray(model.read_bytes())
    data[24:32] = (1 << 62).to_bytes(8, "little")  # the length of the first key
    model.write_bytes(data)
    assert "has corrupt metadata (a length field points to byte" in str(error_of(model))


def test_corrupt_metadata(model: Path) -> None:
    data = bytearray(model.read_bytes())
    key_length = int.from_bytes(data[24:32], "little")
    type_at = 32 + key_length  # the value type of the first key
    data[type_at : type_at + 4] = (200).to_bytes(4, "little")
    model.write_bytes(data)
    error = error_of(model)
    assert "has corrupt metadata" in str(error) and error.__cause__ is not None


# --- sha256 -------------------------------------------------------------------------------


def test_sha256_matches_hashlib_and_is_cached(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    calls: list[Path] = []
    real_hash = gguf_file._hash_file

    def counting_hash(path: Path, *args: Any) -> str:
        calls.append(path)
        return real_hash(path, *args)

    monkeypatch.setattr(gguf_file, "_hash_file", counting_hash)
    assert sha256_of(model) == expected and len(calls) == 1
    assert sha256_of(model) == expected and len(calls) == 1  # a hit
    assert (gguf_file.cache_root() / "sha256.sqlite").is_file()


def test_sha256_cache_is_invalidated_by_any_change(model: Path) -> None:
    first = sha256_of(model)
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    stat = model.stat()
    model.write_bytes(data)  # same size: only mtime tells
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert sha256_of(model) == hashlib.sha256(data).hexdigest() != first
    replaced = model.with_name("new.gguf")
    replaced.write_bytes(bytes(data[:-1]))
    os.replace(replaced, model)  # new inode and size
    assert sha256_of(model) == hashlib.sha256(data[:-1]).hexdigest()


def test_sha256_works_without_a_writable_cache(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GGUFBENCH_CACHE", str(blocker))
    assert sha256_of(model) == hashlib.sha256(model.read_bytes()).hexdigest()


def test_sha256_from_concurrent_threads(tmp_path: Path) -> None:
    files = []
    for i in range(6):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(1000 + i))
        files.append(path)
    results: dict[Path, str] = {}
    threads = [
        threading.Thread(target=lambda p=p: results.__setitem__(p, sha256_of(p))) for p in files
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    with sqlite3.connect(gguf_file.cache_root() / "sha256.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM file_sha256").fetchone()[0] == len(files)


def test_sha256_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        sha256_of(tmp_path / "nope.gguf")


# --- footprint ----------------------------------------------------------------------------


def test_footprint_counts_weights_kv_cache_and_buffers(model: Path) -> None:
    info = validate(model)
    head_dim = N_EMBD // N_HEAD
    parts = footprint(info, 128)
    assert parts.weights == info.size_bytes
    assert parts.kv_cache == N_LAYER * 128 * N_HEAD_KV * 2 * head_dim * 2
    assert footprint(info, 128, n_seq=3).kv_cache == 3 * parts.kv_cache
    assert parts.compute > 0 and parts.logits == 4 * N_VOCAB
    assert footprint_bytes(info, 128) == parts.total
    assert footprint(info, 0).kv_cache == footprint(info, N_CTX_TRAIN).kv_cache
    assert footprint(info, 128, logits_all=True).logits > parts.logits


def test_footprint_sliding_window_layers_shrink_only_without_swa_full(tmp_path: Path) -> None:
    info = validate(write_model(tmp_path / "swa.gguf", extra_kv=SWA_KV))
    full = footprint(info, 256).kv_cache
    small = footprint(info, 256, n_ubatch=8, swa_full=False).kv_cache
    per_cell = N_HEAD_KV * 2 * (N_EMBD // N_HEAD) * 2
    assert full == N_LAYER * 256 * per_cell
    assert small == (256 + 16) * per_cell  # one full layer, one of window + ubatch cells


def test_footprint_has_an_upper_bound_for_models_without_attention_metadata(model: Path) -> None:
    info = validate(model)
    bare = GgufInfo(**{**info.__dict__, "n_head_kv": None})
    assert footprint(bare, 128).kv_cache == 0


# --- the inspect command --------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    inspect_cmd.register(app)
    app.command("noop")(lambda: None)  # a second command keeps typer's subcommand mode
    return app


def test_inspect_json(model: Path) -> None:
    result = CliRunner().invoke(_app(), ["inspect", str(model), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["quant"] == "Q8_0" and data["architecture"] == "llama"
    assert data["n_params"] == N_PARAMS and data["has_chat_template"] is True
    assert data["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_inspect_table(model: Path) -> None:
    result = CliRunner().invoke(_app(), ["inspect", str(model), "--no-sha256"])
    assert result.exit_code == 0, result.output
    for text in ("architecture", "llama", "Q8_0", "bits per weight", "trained context", "256"):
        assert text in result.stdout


def test_inspect_raises_the_model_file_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["inspect", str(tmp_path / "nope.gguf")])
    assert isinstance(result.exception, ModelFileError)
