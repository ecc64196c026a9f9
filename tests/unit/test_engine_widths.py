"""Step widths are measured once per model, build and machine, then remembered."""

from __future__ import annotations

from pathlib import Path

from ggufbench.engine._widths import FILE_NAME, remembered_width


def test_a_width_is_measured_once_then_read_back(tmp_path: Path) -> None:
    calls: list[int] = []

    def measure(width: int) -> int:
        calls.append(width)
        return width

    parts = {"model": "a" * 64, "n_gpu_layers": 0, "n_batch": 512, "limit": 8}
    assert remembered_width(tmp_path, parts, lambda: measure(5)) == 5
    assert remembered_width(tmp_path, parts, lambda: measure(7)) == 5
    assert calls == [5]
    other = dict(parts, n_gpu_layers=99)  # anything that picks other kernels measures again
    assert remembered_width(tmp_path, other, lambda: measure(3)) == 3
    assert remembered_width(tmp_path, parts, lambda: measure(7)) == 5
    assert calls == [5, 3]


def test_a_broken_or_unwritable_cache_only_costs_a_measurement(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{not json")
    parts = {"model": "b" * 64}
    assert remembered_width(tmp_path, parts, lambda: 4) == 4
    assert remembered_width(tmp_path, parts, lambda: 9) == 4  # rewritten whole
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert remembered_width(blocked / "cache", parts, lambda: 6) == 6
