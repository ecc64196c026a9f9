"""A chat rendered by the model's own template, as both llama.cpp runners render it.

The in-process runner and ``llama-server`` (which reads the template, BOS and EOS
from ``/props``) call :func:`render_chat`, so the two send the same prompt text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ggufbench.errors import BackendError

__all__ = ["render_chat"]


def render_chat(
    template: str | None,
    bos: str,
    eos: str,
    messages: Sequence[tuple[str, str]],
    add_generation_prompt: bool,
    name: str,
) -> str:
    """The chat as ``template`` renders it, ending where the model starts.

    ``add_generation_prompt``: end with the template's assistant opening.
    Without it the last message (an assistant turn that lm-eval opens with
    a task's ``gen_prefix``) is continued: the text ends right after it.
    ``name`` (the model file's) is how errors call the model.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    if not template:
        raise BackendError(f"{name} has no chat template; set chat_template for this model")
    formatter = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=add_generation_prompt)
    msgs: Any = [{"role": role, "content": content} for role, content in messages]
    prompt = formatter(messages=msgs).prompt
    if add_generation_prompt or not messages:
        return prompt
    return _continue_final(prompt, messages[-1][1], name)


def _continue_final(prompt: str, final: str, name: str) -> str:
    """Cut the rendered chat right after its last message's text.

    The same rule as Hugging Face's ``continue_final_message`` (which
    lm-eval's HF model uses), written out because transformers is not a
    dependency: the last occurrence of the stripped message, keeping its
    trailing whitespace where the template kept it.
    """
    core = final.strip()
    if core not in prompt:
        raise BackendError(
            f"the chat template of {name} drops the text of the last message, "
            "so the answer cannot continue it; set a chat_template that keeps it"
        )
    at = prompt.rindex(core)
    kept = final.lstrip()
    if prompt[at : at + len(kept)] == kept:
        return prompt[: at + len(kept)]
    return prompt[: at + len(core)]
