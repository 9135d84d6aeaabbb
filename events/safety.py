"""Safety events (topic `run-events`, keyed by run id): each safety stage's decision, appended as it is taken.

A run's input, context, tool and output checks each append one `SafetyDecision` per subject checked
(the user turn, a retrieved chunk, a tool call, a streamed window, the whole answer), so the log says
what each stage saw, which classifiers scored what, which policy version decided and what was done.
"""

from dataclasses import dataclass
from datetime import datetime

# Where a check runs: the user turn before the prompt is built; retrieved chunks and tool results before
# they enter the prompt; a tool call before it runs; the answer, in windows as it streams and whole at the end.
SAFETY_STAGES = ("input", "context", "tool", "output")

# What a stage did, from the mildest to the strictest (a stage uses a few of them; see processors/safety/decision.py).
SAFETY_ACTIONS = (
    "allow",  # nothing over a threshold
    "flag",  # recorded for review; nothing changes for the user
    "redact",  # the flagged spans are replaced by tags (`<EMAIL_ADDRESS>`), the rest goes on
    "fence",  # context: the passage enters the prompt marked as untrusted data, not instructions
    "drop",  # context: the passage is left out of the prompt
    "refuse",  # input: the turn is answered with the reason; tool: the call is not run
    "replace",  # output: the stored answer is a safe fallback
    "stop",  # output, while streaming: the run stops and the stream says why
)

# The categories a policy maps to actions: OpenAI's thirteen moderation categories, then PII and prompt injection.
SAFETY_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
    "pii",
    "prompt_injection",
)


@dataclass(frozen=True, kw_only=True)
class CategoryScore:
    """How strongly the classifiers saw one category (the highest score any of them gave), 0 to 1."""

    category: str
    score: float


@dataclass(frozen=True, kw_only=True)
class SafetyDecision:
    """One safety stage's decision about one subject of a run, with the scores and the policy version behind it."""

    run_id: str
    conversation_id: str
    turn_seq: int  # the turn checked: the user turn (input) or the assistant turn being answered
    stage: str  # one of SAFETY_STAGES
    action: str  # one of SAFETY_ACTIONS
    categories: tuple[CategoryScore, ...]  # every category a classifier scored, highest first
    triggered: tuple[str, ...] = ()  # the categories at or over their policy threshold
    classifiers: tuple[str, ...]  # the classifiers that ran (failed ones included)
    signals: tuple[str, ...] = ()  # what fired, as `classifier:label`: "injection:instruction_override", "llm_judge:S10"
    policy_id: str  # the org whose policy decided, or "default"
    policy_version: str
    reason: str = ""  # what the user may be shown (refuse, replace, stop), or a note for a reviewer
    subject: str | None = None  # what was checked within the stage: a chunk id, a call id, "window:3"
    failures: tuple[str, ...] = ()  # classifiers that failed or timed out: "llm_judge: timed out after 1.5 s"
    fail_mode: str | None = None  # with failures: "open" (decided without them) or "closed" (the strictest action)
    decided_at: datetime


SAFETY_EVENT_TYPES = (SafetyDecision,)
