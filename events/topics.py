"""Topic names and which topic each message type lives on (names may change; the split should not)."""

from events.api_keys import API_KEY_EVENT_TYPES
from events.conversation import CONVERSATION_EVENT_TYPES, ConversationSummarized
from events.documents import DOCUMENT_EVENT_TYPES
from events.erasure import SubjectErased
from events.governance import GOVERNANCE_EVENT_TYPES, GOVERNANCE_REQUEST_TYPES
from events.outcomes import CommandAccepted, CommandRejected
from kernel.dead_letters import DEAD_LETTERS, DeadLetter
from events.runs import RUN_EVENT_TYPES, InferenceRequested, UsageRecorded
from events.safety import SAFETY_EVENT_TYPES
from events.tools import TOOL_EVENT_TYPES

COMMANDS = "commands"
CONVERSATION_EVENTS = "conversation-events"
RUN_EVENTS = "run-events"
COMMAND_OUTCOMES = "command-outcomes"
DOCUMENTS = "documents"
USAGE = "usage"
SUMMARIES = "conversation-summaries"
GOVERNANCE_REQUESTS = "governance-requests"
GOVERNANCE = "governance"
API_KEYS = "api-keys"
INFERENCE_REQUESTS_PREFIX = "inference-requests."


def inference_topic(pool: str) -> str:
    """One inference topic per pool, so a slow pool's queue never delays another's."""
    return INFERENCE_REQUESTS_PREFIX + pool


def inference_topic_for(pool: str, size_class: str) -> str:
    """One inference topic per pool and prompt-size class, so a long prompt never queues ahead of a short one."""
    return f"{inference_topic(pool)}.{size_class}"


_TOPIC_OF_TYPE: dict[type, str] = {
    **{event_type: CONVERSATION_EVENTS for event_type in CONVERSATION_EVENT_TYPES},
    **{event_type: RUN_EVENTS for event_type in (*RUN_EVENT_TYPES, *TOOL_EVENT_TYPES, *SAFETY_EVENT_TYPES)},
    **{event_type: DOCUMENTS for event_type in DOCUMENT_EVENT_TYPES},
    **{event_type: GOVERNANCE_REQUESTS for event_type in GOVERNANCE_REQUEST_TYPES},
    **{event_type: GOVERNANCE for event_type in GOVERNANCE_EVENT_TYPES},
    **{event_type: API_KEYS for event_type in API_KEY_EVENT_TYPES},
    CommandAccepted: COMMAND_OUTCOMES,
    CommandRejected: COMMAND_OUTCOMES,
    DeadLetter: DEAD_LETTERS,
    UsageRecorded: USAGE,
    ConversationSummarized: SUMMARIES,
    SubjectErased: DOCUMENTS,  # read by the projector and the ingester, which drop the subject's data (events/erasure.py)
}


def topic_of(event: object) -> str:
    """The topic an event is appended to (commands always go to `COMMANDS`)."""
    if isinstance(event, InferenceRequested):
        return inference_topic(event.pool)
    try:
        return _TOPIC_OF_TYPE[type(event)]
    except KeyError:
        raise TypeError(f"{type(event).__name__} is not an event with a topic") from None


def key_of(event: object) -> str:
    """The partition key of an event: everything about one conversation (one run's stream, one file) shares it."""
    if _TOPIC_OF_TYPE.get(type(event)) in (CONVERSATION_EVENTS, SUMMARIES):
        return event.conversation_id  # type: ignore[attr-defined]
    if isinstance(event, SubjectErased):
        return event.subject_key
    if _TOPIC_OF_TYPE.get(type(event)) == DOCUMENTS:
        return event.file_id  # type: ignore[attr-defined]
    if _TOPIC_OF_TYPE.get(type(event)) in (GOVERNANCE_REQUESTS, GOVERNANCE):
        return event.org_id  # type: ignore[attr-defined]  # one writer (and one order) per org
    if _TOPIC_OF_TYPE.get(type(event)) == API_KEYS:
        return event.key_id  # type: ignore[attr-defined]
    if isinstance(event, (CommandAccepted, CommandRejected)):
        return event.command_id
    if isinstance(event, DeadLetter):
        return event.key
    return event.run_id  # type: ignore[attr-defined]
