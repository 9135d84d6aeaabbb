"""Every event type, for building a codec."""

from events.api_keys import API_KEY_EVENT_TYPES
from events.conversation import CONVERSATION_EVENT_TYPES, ConversationSummarized
from events.documents import DOCUMENT_EVENT_TYPES
from events.erasure import ERASURE_EVENT_TYPES
from events.governance import GOVERNANCE_EVENT_TYPES, GOVERNANCE_REQUEST_TYPES
from events.outcomes import CommandAccepted, CommandRejected
from kernel.dead_letters import DeadLetter
from events.runs import RUN_EVENT_TYPES, InferenceRequested, UsageRecorded
from events.safety import SAFETY_EVENT_TYPES
from events.tools import TOOL_EVENT_TYPES

EVENT_TYPES: tuple[type, ...] = (
    *CONVERSATION_EVENT_TYPES,
    *RUN_EVENT_TYPES,
    *TOOL_EVENT_TYPES,
    *SAFETY_EVENT_TYPES,
    InferenceRequested,
    UsageRecorded,
    ConversationSummarized,
    *DOCUMENT_EVENT_TYPES,
    CommandAccepted,
    CommandRejected,
    DeadLetter,
    *GOVERNANCE_REQUEST_TYPES,
    *GOVERNANCE_EVENT_TYPES,
    *API_KEY_EVENT_TYPES,
    *ERASURE_EVENT_TYPES,
)
