"""The next model step of a run, pure: the step's prompt, then what the model proposed, then each call's result.

The results enter as `tool` messages in the order the calls were proposed, each saying how the call
ended when it did not complete. A `final` step offers no tools, with a note that the model must
answer with what it has.
"""

from collections.abc import Mapping
from dataclasses import replace

from events.runs import InferenceRequested
from events.tools import ToolCallsProposed
from events.values import ChatMessage

FINAL_STEP_NOTE = (
    "No more tool calls are possible in this answer ({reason}). Answer the user now with what the tool "
    "results above give you, and say what you could not find out."
)


def next_step(
    previous: InferenceRequested,
    proposal: ToolCallsProposed,
    results: Mapping[str, tuple[str, str]],
    *,
    final: bool,
    reason: str = "",
) -> InferenceRequested:
    """`previous` continued by the proposal and its results (`call_id -> (status, result)`), one step later."""
    asked = ChatMessage(role="assistant", content=proposal.text, tool_calls=proposal.calls)
    answers = [
        ChatMessage(role="tool", content=_tool_content(*results[call.call_id]), tool_call_id=call.call_id)
        for call in proposal.calls
        if call.call_id in results
    ]
    note = [ChatMessage(role="system", content=FINAL_STEP_NOTE.format(reason=reason or "the budget ran out"))] if final else []
    return replace(
        previous,
        messages=(*previous.messages, asked, *answers, *note),
        tools=() if final else previous.tools,
        step=proposal.step + 1,
    )


def _tool_content(status: str, result: str) -> str:
    return result if status == "completed" else f"[{status.replace('_', ' ')}] {result}"
