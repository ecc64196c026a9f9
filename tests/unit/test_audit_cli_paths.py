"""audit export and verify: folders and missing logs are sentences, and no file is left behind."""

from __future__ import annotations

from pathlib import Path

from cli_main import invoke


def _run(*args: str) -> tuple[int, str]:
    done = invoke(*args)
    return done.code, done.stdout + done.stderr


def test_export_into_a_folder_is_a_sentence(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    db.write_bytes(b"")
    code, out = _run("audit", "export", str(db), "-o", str(tmp_path))
    assert code == 2
    assert "is a folder" in out


def test_a_failed_export_leaves_no_output_file(tmp_path: Path) -> None:
    target = tmp_path / "x.jsonl"
    code, out = _run("audit", "export", str(tmp_path / "nope.db"), "-o", str(target))
    assert code == 2
    assert "does not exist" in out
    assert list(tmp_path.iterdir()) == []


def test_verify_names_a_folder_as_a_folder(tmp_path: Path) -> None:
    code, out = _run("audit", "verify", str(tmp_path))
    assert code == 2
    assert "is a folder" in out
