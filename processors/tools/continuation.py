"""The next model step of a run, pure: the step's prompt, then what the model proposed, then each call's result.

The results enter as `tool` messages in the order the calls were proposed, each saying how the call
ended when it did not complete. A `final` step offers no tools, with a note that the model must
answer with what it has.

A result that holds passages (`file_search`) numbers them after the run's sources so far (a passage
already among them keeps its number), and its message lists them under those numbers: the `[n]` the
model cites are the run's sources, which the worker turns into citations.

The context safety stage's verdicts come in by id (a passage's chunk id, a plain result's call id): a
dropped passage is left out (and takes no number), a dropped result is replaced by a note saying it was
withheld; a fenced one is wrapped as untrusted data, with the sentence that says what that means.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from events.runs import InferenceRequested
from events.tools import ToolCallsProposed
from events.values import ChatMessage, Source
from processors.grounding import passages
from processors.safety.injection import FENCE_INSTRUCTION, fence
from processors.safety.stages import WITHHELD_RESULT

# How a call came out, as the next step needs it: its status, its result as the model sees it, its passages.
CallResult = tuple[str, str, tuple[Source, ...]]

FINAL_STEP_NOTE = (
    "No more tool calls are possible in this answer ({reason}). Answer the user now with what the tool "
    "results above give you, and say what you could not find out."
)


def next_step(
    previous: InferenceRequested,
    proposal: ToolCallsProposed,
    results: Mapping[str, CallResult],
    *,
    final: bool,
    reason: str = "",
    fenced: Collection[str] = (),
    dropped: Collection[str] = (),
) -> InferenceRequested:
    """`previous` continued by the proposal and its results (`call_id -> (status, result, sources)`), one step later.

    `fenced` and `dropped`: the ids (chunk ids of passages, call ids of plain results) the context stage fenced or dropped.
    """
    asked = ChatMessage(role="assistant", content=proposal.text, tool_calls=proposal.calls)
    sources = list(previous.sources)
    answers = []
    for call in proposal.calls:
        if call.call_id not in results:
            continue
        status, result, found = results[call.call_id]
        if status == "completed" and found:
            kept = [source for source in found if source.chunk_id not in dropped]
            numbered = _numbered(kept, sources)
            content = passages(numbered, fenced=fenced) if numbered else WITHHELD_RESULT
            if any(source.chunk_id in fenced for source in numbered):
                content = f"{FENCE_INSTRUCTION}\n\n{content}"
        elif call.call_id in dropped:
            content = WITHHELD_RESULT
        elif call.call_id in fenced:
            content = f"{FENCE_INSTRUCTION}\n\n{fence(_tool_content(status, result), source=call.call_id)}"
        else:
            content = _tool_content(status, result)
        answers.append(ChatMessage(role="tool", content=content, tool_call_id=call.call_id))
    note = [ChatMessage(role="system", content=FINAL_STEP_NOTE.format(reason=reason or "the budget ran out"))] if final else []
    return replace(
        previous,
        messages=(*previous.messages, asked, *answers, *note),
        tools=() if final else previous.tools,
        step=proposal.step + 1,
        sources=tuple(sources),
    )


def _numbered(found: Sequence[Source], sources: list[Source]) -> list[Source]:
    """`found` under the run's numbers: a passage already in `sources` keeps its own, a new one is appended with the next."""
    known = {source.chunk_id: source for source in sources}
    numbered = []
    for source in found:
        if source.chunk_id not in known:
            known[source.chunk_id] = replace(source, marker=max((s.marker for s in sources), default=0) + 1)
            sources.append(known[source.chunk_id])
        numbered.append(known[source.chunk_id])
    return list(dict.fromkeys(numbered))  # a passage twice in one result is listed once


def _tool_content(status: str, result: str) -> str:
    return result if status == "completed" else f"[{status.replace('_', ' ')}] {result}"
