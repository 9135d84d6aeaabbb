"""The event types that carry content: their payloads are sealed under the actor's data key (docs/encryption.md).

Conversation text (titles, user turns, deltas, answers), the prompts and their manifests, the passages
and tool results a run saw, and uploads' names. Everything else (ids, states, counts, usage, governance)
stays plaintext on the log: deciders, routing and the ledgers need it, and it holds no one's words.
"""

from events.conversation import (
    AssistantTurnFinished,
    ConversationCreated,
    ConversationRenamed,
    ConversationSummarized,
    TurnSubmitted,
)
from events.documents import FileIndexed, FileUploaded
from events.runs import (
    AssistantDelta,
    InferenceRequested,
    PromptAssembled,
    RunFinished,
    RunStarted,
    ToolCalled,
    ToolReturned,
)
from events.tools import ToolApprovalRequested, ToolCallFinished, ToolCallRequested, ToolCallsProposed

SEALED_EVENT_TYPES: tuple[type, ...] = (
    ConversationCreated,
    ConversationRenamed,
    TurnSubmitted,
    RunStarted,  # no words, but the API finds a run by it: an erased user's runs no longer exist
    AssistantDelta,
    AssistantTurnFinished,
    RunFinished,
    ConversationSummarized,
    InferenceRequested,
    PromptAssembled,
    FileUploaded,
    FileIndexed,  # its title is the document's
    ToolCalled,
    ToolReturned,
    ToolCallsProposed,
    ToolCallRequested,
    ToolApprovalRequested,
    ToolCallFinished,
)
