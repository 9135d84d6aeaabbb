"""Prompt assembly: the branch being answered, newest turns kept, the stable system prefix first."""

from datetime import UTC, datetime

from events.conversation import AssistantTurnFinished, RunRequested, TurnSubmitted
from kernel.envelope import Envelope
from kernel.envelope import Actor
from events.values import ContentPart, ToolSpec, Usage
from inference.tokenizers import WordTokenizer
from processors.prompting import PromptPolicy
from processors.transcripts import Transcript, evolve_transcript
from processors.prompting import build_prompt as assemble

ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def user(seq: int, text: str, parent: int | None) -> Envelope:
    return Envelope.wrap(TurnSubmitted(conversation_id="c", turn_seq=seq, parent_turn_seq=parent,
                                       content=(ContentPart(type="text", text=text),), submitted_at=NOW), key="c", actor=ACTOR)


def answer(seq: int, text: str, parent: int, state: str = "completed") -> Envelope:
    return Envelope.wrap(AssistantTurnFinished(conversation_id="c", run_id=f"run_{seq}", turn_seq=seq, parent_turn_seq=parent,
                                               state=state, content=(ContentPart(type="text", text=text),), usage=Usage(),
                                               mode="interactive", requested_at=NOW, finished_at=NOW), key="c", actor=ACTOR)


def run(seq: int, parent: int) -> RunRequested:
    return RunRequested(conversation_id="c", run_id=f"run_{seq}", turn_seq=seq, parent_turn_seq=parent, mode="interactive",
                        request_fingerprint="f", created_turn_seq=parent, requested_at=NOW)


def build_prompt(transcript, run, policy, **options):
    """The request alone, counted in words (the scripted engine's tokens), with no tenant salt."""
    return assemble(transcript, run, policy, tokenizer=WordTokenizer(), **options).request


def transcript_of(*events: Envelope) -> Transcript:
    transcript = Transcript()
    for event in events:
        transcript = evolve_transcript(transcript, event)
    return transcript


def roles_and_texts(request) -> list[tuple[str, str]]:
    return [(message.role, message.content) for message in request.messages]


def test_prompt_is_system_prefix_then_history_then_new_turn() -> None:
    transcript = transcript_of(user(1, "hi", None), answer(2, "hello", 1), user(3, "and now?", 2))
    request = build_prompt(transcript, run(4, 3), PromptPolicy(system_prompt="SYS", max_output_tokens=7, pool="p"))
    assert roles_and_texts(request) == [("system", "SYS"), ("user", "hi"), ("assistant", "hello"), ("user", "and now?")]
    assert (request.run_id, request.turn_seq, request.pool, request.max_output_tokens) == ("run_4", 4, "p", 7)


def test_regeneration_answers_the_same_branch_without_the_earlier_answer() -> None:
    transcript = transcript_of(user(1, "q", None), answer(2, "first answer", 1))
    request = build_prompt(transcript, run(3, 1), PromptPolicy(system_prompt="S"))
    assert roles_and_texts(request) == [("system", "S"), ("user", "q")]


def test_the_next_turn_after_a_regeneration_follows_the_newest_answer() -> None:
    transcript = transcript_of(user(1, "q", None), answer(2, "old", 1), answer(3, "new", 1), user(4, "more", 3))
    request = build_prompt(transcript, run(5, 4), PromptPolicy(system_prompt="S"))
    assert roles_and_texts(request) == [("system", "S"), ("user", "q"), ("assistant", "new"), ("user", "more")]


def test_failed_answers_are_skipped_but_keep_the_chain() -> None:
    transcript = transcript_of(user(1, "q", None), answer(2, "partial junk", 1, state="failed"), user(3, "again", 2))
    request = build_prompt(transcript, run(4, 3), PromptPolicy(system_prompt="S"))
    assert roles_and_texts(request) == [("system", "S"), ("user", "q"), ("user", "again")]


def test_history_budget_keeps_the_newest_turns() -> None:
    events = [user(1, "x " * 100, None)]
    for seq in range(2, 12, 2):
        events += [answer(seq, "a " * 30, seq - 1), user(seq + 1, f"turn {seq + 1}", seq)]
    policy = PromptPolicy(system_prompt="S", context_tokens=150, max_output_tokens=50)  # 100 tokens of prompt
    prompt = assemble(transcript_of(*events), run(12, 11), policy, tokenizer=WordTokenizer())
    texts = [content for _, content in roles_and_texts(prompt.request)]
    assert texts[0] == "S" and texts[-1] == "turn 11"
    assert prompt.manifest.prompt_tokens == sum(len(text.split()) for text in texts) <= 100
    assert "x " * 100 not in texts  # the oldest turn fell out of the budget
    assert prompt.manifest.turn_seqs[-1] == 11 and 1 not in prompt.manifest.turn_seqs


def test_the_offered_tools_take_their_share_of_the_budget_before_the_history() -> None:
    events = []
    for seq in range(1, 11, 2):
        events += [user(seq, f"question {seq} " + "q " * 8, seq - 1 or None), answer(seq + 1, "a " * 10, seq)]
    events.append(user(11, "last", 10))
    policy = PromptPolicy(system_prompt="S", context_tokens=150, max_output_tokens=50)
    tool = ToolSpec(name="lookup", description=" ".join(["finds"] * 30), parameters='{"type": "object"}')
    without = assemble(transcript_of(*events), run(12, 11), policy, tokenizer=WordTokenizer())
    offered = assemble(transcript_of(*events), run(12, 11), policy, tokenizer=WordTokenizer(), tools=[tool])

    assert offered.request.tools == (tool,) and without.request.tools == ()
    assert offered.manifest.tool_tokens >= 30 and without.manifest.tool_tokens == 0
    assert len(offered.manifest.turn_seqs) < len(without.manifest.turn_seqs)  # older turns made room
    messages_only = sum(len(m.content.split()) for m in offered.request.messages)
    assert offered.manifest.prompt_tokens == messages_only + offered.manifest.tool_tokens <= 100
