"""The Speed table and plot: input tokens/s for likelihood and fidelity jobs, generated
tokens/s for generation jobs, requests/s for runs from before input tokens were counted."""

from __future__ import annotations

from ggufbench.report import render
from ggufbench.report._plots import _speed_panels


def speed_entry(**extra: object) -> dict:
    return {"status": "done", "metrics": {}, "n_samples": 3, "wall_s": 3.0, "compute_s": 2.0,
            "requests": {"total": 12, "computed": 8, "from_cache": 4}, **extra}  # fmt: skip


def summary(**benchmarks: dict) -> dict:
    model = {"quant": "Q4_1", "size_bytes": 1, "benchmarks": benchmarks}
    return {"run_id": "r", "status": "done", "baseline": "m", "models": {"m": model}}


def speed_lines(text: str) -> list[str]:
    part = text[text.index("## Speed") :]
    return part[: part.index("\n\n", part.index("|"))].splitlines()


def test_the_speed_table_shows_input_tokens_per_second() -> None:
    text = render(
        summary(
            demo_hellaswag=speed_entry(gen_tokens=0, input_tokens=5000),
            demo_gsm8k=speed_entry(gen_tokens=300, input_tokens=0),
        )
    )
    lines = speed_lines(text)
    assert "| computed/s | input tokens/s | gen tokens/s |" in lines[2]
    assert "| m | demo_hellaswag | 3.0 | 12 | 4 | 4.00 | 2500.0 | – |" in lines
    assert "| m | demo_gsm8k | 3.0 | 12 | 4 | 4.00 | – | 150.0 |" in lines


def test_a_run_from_before_input_tokens_still_renders_requests_per_second() -> None:
    old = summary(demo_hellaswag=speed_entry(gen_tokens=0))  # no input_tokens field
    assert "| m | demo_hellaswag | 3.0 | 12 | 4 | 4.00 | – | – |" in speed_lines(render(old))
    assert _speed_panels(old) == [("requests/s", [("demo_hellaswag · m", 4.0, "m")])]


def test_the_speed_plot_has_a_panel_per_kind_of_count() -> None:
    panels = dict(
        _speed_panels(
            summary(
                demo_hellaswag=speed_entry(input_tokens=5000),
                fidelity=speed_entry(input_tokens=1024),
                demo_gsm8k=speed_entry(gen_tokens=300),
            )
        )
    )
    assert panels == {
        "generated tokens/s": [("demo_gsm8k · m", 150.0, "m")],
        "input tokens/s (tokens read)": [
            ("demo_hellaswag · m", 2500.0, "m"),
            ("fidelity · m", 512.0, "m"),
        ],
    }
