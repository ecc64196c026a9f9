"""The thinking wrapper: only final answers (and hashes) leave it."""

import hashlib

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.thinking import thinking_format


class ScriptedBackend:
    """A fake backend that returns canned raw outputs and records what it was asked."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.seen: list[GenRequest] = []
        self.info = BackendInfo("scripted", "fake", {"n_ctx": 1})

    def generate(self, requests):
        self.seen += requests
        return [GenResult(self.outputs.pop(0), reason) for reason in ["stop"] * len(requests)]


def test_answer_only_hashes_and_stops_apply_to_the_answer():
    raw = "<think-task>plan: stop here\nQuestion:</think-task><final>42\nQuestion: more</final>"
    inner = ScriptedBackend([raw, "<think>never closed"])
    backend = ThinkingBackend(inner, thinking_format("quad"))
    first, second = backend.generate(
        [GenRequest(prompt="p", stop=("Question:",)), GenRequest(prompt="q")]
    )
    assert inner.seen[0].stop == ()  # the model's thinking is not cut by the task's stops
    assert first.text == "42\n"
    inner_text = "plan: stop here\nQuestion:"
    assert first.thinking["sha256"] == hashlib.sha256(inner_text.encode()).hexdigest()
    assert first.thinking["sections"][0]["name"] == "think-task"
    assert first.thinking["withheld_reason"] is None
    assert second.text == "" and second.thinking["withheld_reason"]
    assert "plan" not in repr(first) and "never closed" not in repr(second)
    assert backend.info.settings["thinking"] == "quad"  # part of every cache key
