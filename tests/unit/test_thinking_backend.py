"""The thinking wrapper: only final answers (and hashes) leave it."""

import hashlib

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.cache_key import cache_key
from ggufbench.thinking import thinking_format


class ScriptedBackend:
    """A fake backend that returns canned raw outputs and records what it was asked."""

    def __init__(self, outputs, finish="stop"):
        self.outputs = list(outputs)
        self.finish = finish
        self.seen: list[GenRequest] = []
        self.formats: list[object] = []
        self.info = BackendInfo("scripted", "fake", {"n_ctx": 1})

    def generate(self, requests, thinking=None):
        self.seen += requests
        self.formats.append(thinking)
        return [GenResult(self.outputs.pop(0), self.finish, 3, 9) for _ in requests]


def test_answer_only_hashes_and_stops_apply_to_the_answer():
    raw = "<think-task>plan: stop here\nQuestion:</think-task><final>42\nQuestion: more</final>"
    inner = ScriptedBackend([raw, "<think>never closed"])
    backend = ThinkingBackend(inner, thinking_format("quad"))
    first, second = backend.generate(
        [GenRequest(prompt="p", stop=("Question:",)), GenRequest(prompt="q")]
    )
    # the stops go down with the format, so the backend ends the generation in the answer
    assert inner.seen[0].stop == ("Question:",) and inner.formats == [backend.fmt]
    assert first.text == "42"
    inner_text = "plan: stop here\nQuestion:"
    assert first.thinking["sha256"] == hashlib.sha256(inner_text.encode()).hexdigest()
    assert first.thinking["sections"][0]["name"] == "think-task"
    assert first.thinking["withheld_reason"] is None
    assert second.text == "" and second.thinking["withheld_reason"]
    assert "plan" not in repr(first) and "never closed" not in repr(second)
    assert backend.info.settings["thinking"] == "quad"  # part of every cache key


def test_a_few_shot_answer_followed_by_the_next_shot_is_scored():
    """A model without a chat template writes the next shot after its answer; the
    generation ran on to the token limit there, but the answer ended at "Question:"."""
    raw = "<think>6 times 7\n\nQuestion: is 42</think>\n\nThe answer is 42.\n\nQuestion: Tom"
    inner = ScriptedBackend([raw], finish="length")
    backend = ThinkingBackend(inner, thinking_format("think"))
    [result] = backend.generate([GenRequest(prompt="p", stop=("Question:", "\n\n"))])
    assert result.text == "The answer is 42."
    assert result.finish_reason == "stop"  # cut at a stop: complete, not truncated
    assert result.thinking["withheld_reason"] is None
    assert result.thinking["length"] == len("6 times 7\n\nQuestion: is 42")


def test_without_a_stop_in_the_answer_the_token_limit_still_withholds():
    raw = "<think>6 times 7\n\nQuestion: is 42</think> The answer is 4"
    backend = ThinkingBackend(ScriptedBackend([raw], finish="length"), thinking_format("think"))
    [result] = backend.generate([GenRequest(prompt="p", stop=("Question:",))])
    assert result.text == "" and result.thinking["withheld_reason"] == "truncated"
    assert result.finish_reason == "length"


def test_answers_cached_under_the_old_stop_rule_are_not_served():
    """Before, stops were applied after generation to the stripped answer; a cache
    key of a thinking model names the rule, so such answers are never read back."""
    inner = ScriptedBackend([])
    backend = ThinkingBackend(inner, thinking_format("think"))
    request = {"prompt": "p", "stop": ["Question:"]}
    old = BackendInfo("scripted", "fake", {"n_ctx": 1, "thinking": "think"})
    assert cache_key(backend.info, "generate", request) != cache_key(old, "generate", request)
