"""The real demo models: metadata, `ggufbench inspect` as a user runs it, derived variants."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import ggufbench
from ggufbench.errors import ModelFileError
from ggufbench.footprint import footprint
from ggufbench.gguf_file import sha256_of, validate
from ggufbench.testmodels import derived_path, gemma_path, smollm2_path


def test_smollm2_metadata() -> None:
    info = validate(smollm2_path())
    assert (info.architecture, info.quant) == ("llama", "Q4_1")
    assert info.n_params == 134_515_008 and 5.5 < info.bits_per_weight < 6.0
    assert (info.context_length, info.n_layer, info.n_head, info.n_head_kv) == (8192, 30, 9, 3)
    assert (info.head_dim_k, info.vocab_size, info.add_bos_token) == (64, 49152, False)
    assert info.has_chat_template and "<|im_start|>" in (info.chat_template or "")
    # llama.cpp itself reports a 45.00 MiB f16 KV cache for 2048 cells of this model.
    assert footprint(info, 2048).kv_cache == 45 * 2**20


def test_inspect_json_through_the_command() -> None:
    model = smollm2_path()
    result = ggufbench("inspect", str(model), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["architecture"] == "llama" and data["quant"] == "Q4_1"
    assert data["n_params"] == 134_515_008 and data["context_length"] == 8192
    assert data["has_chat_template"] is True and "chat_template" not in data
    assert data["size_bytes"] == model.stat().st_size
    assert data["sha256"] == sha256_of(model)


def test_inspect_table_through_the_command() -> None:
    result = ggufbench("inspect", str(smollm2_path()), timeout=120)
    assert result.returncode == 0, result.stderr
    for text in ("llama", "Q4_1", "134.5 M", "5.74", "8,192", "chat template", "sha256"):
        assert text in result.stdout


def test_inspect_bad_files_exit_2_with_one_sentence(tmp_path: Path) -> None:
    model = smollm2_path()
    half = tmp_path / "half.gguf"
    with model.open("rb") as src:
        half.write_bytes(src.read(model.stat().st_size // 2))
    text = tmp_path / "readme.gguf"
    text.write_text("# not a model\n")
    cases = {
        half: "is truncated: tensor data needs",
        text: "is not a GGUF file",
        tmp_path / "missing.gguf": "does not exist",
    }
    for path, expected in cases.items():
        result = ggufbench("inspect", str(path), timeout=120)
        assert result.returncode == 2, result.stdout
        message = " ".join(result.stderr.split())
        assert expected in message and "Traceback" not in result.stderr


def test_derived_q4_0_is_smaller_and_reused() -> None:
    source = validate(smollm2_path())
    path = derived_path(source.path, "Q4_0")
    derived = validate(path)
    assert derived.quant == "Q4_0" and derived.architecture == "llama"
    assert derived.n_params == source.n_params
    assert derived.size_bytes < source.size_bytes
    assert derived.bits_per_weight < source.bits_per_weight
    made = path.stat().st_mtime_ns
    assert derived_path(source.path, "q4_0") == path and path.stat().st_mtime_ns == made
    assert not list(path.parent.glob(".*.tmp"))


def test_derived_path_rejects_an_unknown_quantization() -> None:
    with pytest.raises(ModelFileError, match="unknown quantization 'Q9_Z'"):
        derived_path(smollm2_path(), "Q9_Z")


def test_gemma_is_assembled_once() -> None:
    path = gemma_path()
    info = validate(path)
    assert (info.architecture, info.quant, info.add_bos_token) == ("gemma3", "Q4_K_M", True)
    assert info.sliding_window == 512 and info.vocab_size == 262144
    made = path.stat().st_mtime_ns
    assert gemma_path() == path and path.stat().st_mtime_ns == made
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256_of(path)
