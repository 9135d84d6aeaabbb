"""The LLM judge against a real HTTP server: Llama Guard's verdicts mapped to the policy's categories, failures reported."""

from __future__ import annotations

import httpx
import pytest

from processors.safety.classifiers import ClassifierFailure, run_classifiers
from processors.safety.llm_judge import (
    LLAMA_GUARD_CATEGORIES,
    LLAMA_GUARD_HAZARDS,
    JudgeAnswerUnreadable,
    LlmJudgeClassifier,
    classification_of,
    llama_guard_prompt,
    parse_verdict,
)
from events.safety import SAFETY_CATEGORIES


@pytest.fixture
def script(judge):
    judge.script = type(judge.script)()
    judge.requests.clear()
    return judge.script


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as client:
        yield client


def judge_for(judge, client, **options) -> LlmJudgeClassifier:
    return LlmJudgeClassifier(client=client, base_url=judge.base_url, model="llama-guard-3-1b", **options)


async def test_an_unsafe_verdict_scores_the_mapped_categories(judge, script, client) -> None:
    script.answer = "unsafe\nS10"
    classification = await judge_for(judge, client).classify("a hateful sentence")
    assert classification.scores == {"hate": 1.0}
    assert classification.labels == ("S10",)
    assert classification.classifier == "llm_judge"


async def test_several_codes_score_each_of_their_categories(judge, script, client) -> None:
    script.answer = "unsafe\nS1,S11"
    classification = await judge_for(judge, client).classify("text")
    assert classification.scores == {"illicit/violent": 1.0, "violence": 1.0, "self-harm": 1.0}
    assert classification.labels == ("S1", "S11")


async def test_a_safe_verdict_scores_nothing(judge, script, client) -> None:
    script.answer = "safe"
    classification = await judge_for(judge, client).classify("hello")
    assert (classification.scores, classification.labels) == ({}, ())


async def test_the_request_is_the_conversation_for_the_models_own_template(judge, script, client) -> None:
    await judge_for(judge, client, api_key="secret").classify("is this fine?")
    seen = judge.requests[-1]
    assert seen.body == {
        "model": "llama-guard-3-1b", "messages": [{"role": "user", "content": "is this fine?"}],
        "max_tokens": 16, "temperature": 0, "stream": False,
    }
    assert seen.headers["authorization"] == "Bearer secret"


async def test_an_answer_is_judged_as_the_reply_to_a_request(judge, script, client) -> None:
    await judge_for(judge, client, role="assistant").classify("the answer")
    assert judge.requests[-1].body["messages"] == [{"role": "user", "content": ""}, {"role": "assistant", "content": "the answer"}]


async def test_a_general_model_gets_the_task_prompt_written_out(judge, script, client) -> None:
    await judge_for(judge, client, prompt="instructions", role="assistant").classify("the answer")
    (message,) = judge.requests[-1].body["messages"]
    assert message["role"] == "user"
    assert message["content"] == llama_guard_prompt("the answer", role="assistant")
    assert "Agent: the answer" in message["content"] and "S14: Code Interpreter Abuse." in message["content"]


async def test_a_base_url_with_v1_is_not_doubled(judge, script, client) -> None:
    script.answer = "unsafe\nS12"
    classification = await LlmJudgeClassifier(client=client, base_url=f"{judge.base_url}/v1/", model="m").classify("x")
    assert classification.scores == {"sexual": 1.0}


@pytest.mark.parametrize(
    ("script_changes", "timeout_s", "kind", "detail_start"),
    [
        ({"answer": "I think it is fine"}, 10.0, "error", "JudgeAnswerUnreadable: neither safe nor unsafe"),
        ({"answer": ""}, 10.0, "error", "JudgeAnswerUnreadable: an empty answer"),
        ({"body": "not json at all"}, 10.0, "error", "JudgeAnswerUnreadable: not a chat completion"),
        ({"status": 503}, 10.0, "error", "HTTPStatusError: Server error '503 Service Unavailable'"),
        ({"delay_s": 2.0}, 0.1, "timeout", "timed out after 100 ms"),
    ],
)
async def test_a_judge_that_fails_is_a_failure_of_the_runner(judge, script, client, script_changes, timeout_s, kind, detail_start) -> None:
    for key, value in script_changes.items():
        setattr(script, key, value)
    results = await run_classifiers([judge_for(judge, client)], "text", timeout_s=timeout_s)
    assert results.classifications == ()
    (failure,) = results.failures
    assert (failure.classifier, failure.kind) == ("llm_judge", kind)
    assert failure.detail.startswith(detail_start), failure.detail
    assert isinstance(failure, ClassifierFailure)


async def test_an_unreachable_judge_is_a_failure(client) -> None:
    classifier = LlmJudgeClassifier(client=client, base_url="http://127.0.0.1:9", model="m")
    results = await run_classifiers([classifier], "text", timeout_s=2.0)
    assert [failure.detail.split(":")[0] for failure in results.failures] == ["ConnectError"]


@pytest.mark.parametrize(
    ("answer", "codes"),
    [
        ("safe", ()),
        ("  Safe \n", ()),
        ("unsafe\nS1", ("S1",)),
        ("unsafe\nS1,S10", ("S1", "S10")),
        ("unsafe\n S2, s14 ", ("S2", "S14")),
        ("unsafe\nS3,S3", ("S3",)),
        ("unsafe", ("unsafe",)),
    ],
)
def test_verdicts(answer: str, codes: tuple[str, ...]) -> None:
    assert parse_verdict(answer) == codes


@pytest.mark.parametrize("answer", ["", "  ", "maybe", "The content is safe."])
def test_unreadable_verdicts(answer: str) -> None:
    with pytest.raises(JudgeAnswerUnreadable):
        parse_verdict(answer)


def test_codes_without_a_category_keep_their_labels_and_score_nothing() -> None:
    classification = classification_of(("S6", "S13", "unsafe"), classifier="j")
    assert (classification.scores, classification.labels) == ({}, ("S6", "S13", "unsafe"))


def test_every_hazard_maps_only_to_policy_categories() -> None:
    assert set(LLAMA_GUARD_CATEGORIES) == set(LLAMA_GUARD_HAZARDS) == {f"S{n}" for n in range(1, 15)}
    assert {category for categories in LLAMA_GUARD_CATEGORIES.values() for category in categories} <= set(SAFETY_CATEGORIES)
