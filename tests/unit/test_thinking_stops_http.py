"""A thinking model on an OpenAI-compatible server: the stream is closed at the first
stop string in the answer, and that answer is scored (httpx.MockTransport, no server)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from ggufbench.backends._base import GenRequest
from ggufbench.backends.openai_http import OpenAIBackend
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.thinking import thinking_format

BASE = "http://model.test/v1"
STOPS = ("Question:", "\n\n")
NEXT_SHOT = "\n\nQuestion: Tom has 3 apples. How many apples does he have after"


class CountedEvents(httpx.SyncByteStream):
    """A completion stream, 3 characters an event, that counts the events read."""

    def __init__(self, text: str, finish: str) -> None:
        chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
        self.events = [{"choices": [{"text": c, "finish_reason": None}]} for c in chunks]
        self.events.append({"choices": [{"text": "", "finish_reason": finish}]})
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for event in self.events:
            self.read += 1
            yield f"data: {json.dumps(event)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        self.closed = True


def serve(text: str, finish: str = "length") -> tuple[ThinkingBackend, CountedEvents, list]:
    stream = CountedEvents(text, finish)
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    raw = OpenAIBackend(BASE, "thinker", transport=httpx.MockTransport(handler), retries=0)
    return ThinkingBackend(raw, thinking_format("think")), stream, bodies


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        # a stop string inside the thinking
        ("<think>6 times 7\n\nQuestion: is it 42</think> The answer is 42.", "The answer is 42."),
        # a stop string right after the thinking, before the answer began
        ("<think>6 times 7</think>\n\nThe answer is 42.", "The answer is 42."),
    ],
)
def test_the_stream_closes_at_the_first_stop_in_the_answer(output: str, answer: str) -> None:
    backend, stream, bodies = serve(output + NEXT_SHOT)
    [result] = backend.generate([GenRequest(prompt="Question: 6*7?", stop=STOPS)])
    assert (result.text, result.finish_reason) == (answer, "stop")
    assert result.thinking is not None and result.thinking["withheld_reason"] is None
    # the generation ended there: the rest of the stream was never read
    assert stream.closed and stream.read < len(stream.events) - 5
    assert result.n_tokens == stream.read
    # the stop strings were not sent: the server would have cut the thinking
    assert "stop" not in bodies[0] and bodies[0]["stream"] is True


def test_a_stop_right_after_the_thinking_gives_an_empty_answer() -> None:
    backend, stream, _ = serve("<think>6 times 7</think>Question: 1+1?" + NEXT_SHOT)
    [result] = backend.generate([GenRequest(prompt="p", stop=STOPS)])
    assert result.text == "" and result.thinking is not None
    assert result.thinking["withheld_reason"] == "empty_answer"
    assert stream.closed and stream.read < len(stream.events) - 5


def test_without_a_stop_in_the_answer_the_whole_stream_is_read() -> None:
    output = "<think>6 times 7\n\nQuestion: is it 42</think> The answer is 42."
    backend, stream, _ = serve(output, finish="stop")
    [result] = backend.generate([GenRequest(prompt="p", stop=STOPS)])
    assert (result.text, result.finish_reason) == ("The answer is 42.", "stop")
    assert stream.read == len(stream.events)
    backend, stream, _ = serve(output + " And", finish="length")
    [result] = backend.generate([GenRequest(prompt="p", stop=STOPS)])
    assert result.text == "" and result.finish_reason == "length"
    assert result.thinking is not None and result.thinking["withheld_reason"] == "truncated"


def test_without_stop_strings_the_request_is_not_streamed() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        reply = {"choices": [{"text": "<think>a</think> 4", "finish_reason": "stop"}]}
        return httpx.Response(200, json=reply)

    raw = OpenAIBackend(BASE, "thinker", transport=httpx.MockTransport(handler))
    backend = ThinkingBackend(raw, thinking_format("think"))
    [result] = backend.generate([GenRequest(prompt="p")])
    assert result.text == "4" and "stream" not in bodies[0]
