"""SmolLM2-Instruct's function-calling format: tools in the system prompt, `<tool_call>` blocks in its answer.

SmolLM2-Instruct was trained (its model card's "function calling" instructions) on a system prompt
that lists the tools as JSON inside `<tools>...</tools>` and asks for the calls as one JSON list in
`<tool_call>[{"name": ..., "arguments": {...}}, ...]</tool_call>`, `[]` when none is needed. The
GGUF's own chat template is plain ChatML and knows nothing of tools, so the prompt is written here:
the tools prompt leads the system message, an assistant message's calls are written back as the
block the model would have produced, and a `tool` message is a ChatML turn of role `tool`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from events.values import ChatMessage, ToolCallProposal, ToolSpec

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# The model card's prompt, kept as trained (trailing spaces too): a small model follows the wording it
# saw, not a paraphrase.
_TOOLS_SYSTEM_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. \n"
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. \n"
    "If none of the functions can be used, point it out and refuse to answer. \n"
    "If the given question lacks the parameters required by the function, also point it out.\n"
    "\n"
    "You have access to the following tools:\n"
    "<tools>{tools}</tools>\n"
    "\n"
    "The output MUST strictly adhere to the following format, and NO other text MUST be included.\n"
    "The example format is as follows. Please make sure the parameter type is correct. If no function call is "
    "needed, please make the tool calls an empty list '[]'.\n"
    "<tool_call>[\n"
    '{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},\n'
    "... (more tool calls as required)\n"
    "]</tool_call>"
)


def tools_system_prompt(tools: tuple[ToolSpec, ...]) -> str:
    """The system prompt that offers `tools`, each as `{"type": "function", "function": {...}}`."""
    listed = [
        {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                          "parameters": _json_or_text(tool.parameters) or {}}}
        for tool in tools
    ]
    return _TOOLS_SYSTEM_PROMPT.format(tools=json.dumps(listed))


def template_messages(messages: tuple[ChatMessage, ...], tools: tuple[ToolSpec, ...]) -> list[dict[str, str]]:
    """The messages as the chat template takes them: the tools prompt first when tools are on offer,
    proposed calls written out as `<tool_call>` blocks. Without tools or calls, just role and content."""
    rendered = [{"role": message.role, "content": _content_of(message)} for message in messages]
    if tools:
        prompt = tools_system_prompt(tools)
        if rendered and rendered[0]["role"] == "system":
            # One system turn, as trained; the conversation's own instructions follow the tools.
            rendered[0] = {"role": "system", "content": f"{prompt}\n\n{rendered[0]['content']}"}
        else:
            rendered.insert(0, {"role": "system", "content": prompt})
    return rendered


def _content_of(message: ChatMessage) -> str:
    if not message.tool_calls:
        return message.content
    calls = [{"name": call.name, "arguments": _json_or_text(call.arguments)} for call in message.tool_calls]
    block = f"{TOOL_CALL_OPEN}{json.dumps(calls)}{TOOL_CALL_CLOSE}"
    return f"{message.content}\n{block}" if message.content else block


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_tool_call_block(block: str) -> list[tuple[str, str]] | None:
    """The (name, arguments JSON text) of each call in a block's JSON list (or single object); None
    when the block is not such JSON. `[]` is the model saying no call is needed."""
    try:
        parsed = json.loads(block.strip())
    except ValueError:
        return None
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get("arguments", {})
        calls.append((item["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)))
    return calls


class ToolCallBlocks:
    """Takes a streamed answer apart: its text goes on, its `<tool_call>` blocks become calls.

    Text that may be the start of `<tool_call>` is held back until it is clearly not; a block that
    is not JSON of calls goes on as text, as the model wrote it. `finish()` hands back whatever is
    still held, an unclosed block (the step was cut short) included: it proposes nothing.
    """

    def __init__(self, call_id: Callable[[int], str]) -> None:
        self._call_id = call_id
        self._held = ""
        self._inside = False
        self.calls: list[ToolCallProposal] = []

    def push(self, text: str) -> str:
        """The text that can be shown now."""
        self._held += text
        shown: list[str] = []
        while True:
            if self._inside:
                end = self._held.find(TOOL_CALL_CLOSE)
                if end < 0:
                    break
                block, self._held = self._held[:end], self._held[end + len(TOOL_CALL_CLOSE) :]
                self._inside = False
                parsed = parse_tool_call_block(block)
                if parsed is None:
                    shown.append(f"{TOOL_CALL_OPEN}{block}{TOOL_CALL_CLOSE}")
                for name, arguments in parsed or ():
                    self.calls.append(
                        ToolCallProposal(call_id=self._call_id(len(self.calls)), name=name, arguments=arguments)
                    )
                continue
            start = self._held.find(TOOL_CALL_OPEN)
            if start >= 0:
                shown.append(self._held[:start])
                self._held = self._held[start + len(TOOL_CALL_OPEN) :]
                self._inside = True
                continue
            keep = _partial_tag_length(self._held)
            shown.append(self._held[: len(self._held) - keep])
            self._held = self._held[len(self._held) - keep :]
            break
        return "".join(shown)

    def finish(self) -> str:
        """What is still held back, as text."""
        rest = f"{TOOL_CALL_OPEN}{self._held}" if self._inside else self._held
        self._held, self._inside = "", False
        return rest


def _partial_tag_length(text: str) -> int:
    """How long an end of `text` is that `<tool_call>` could still grow from."""
    for length in range(min(len(text), len(TOOL_CALL_OPEN) - 1), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-length:]):
            return length
    return 0
