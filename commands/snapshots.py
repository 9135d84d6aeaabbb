"""A conversation's decider state saved beside the log, so that a decider's miss does not fold its whole history.

The decider keeps the states of the conversations it decided lately; any other (evicted, or after a restart) is
folded on its next command from `conversation-events`, and on Kafka that scans the conversation's partition from
the conversation id's minting time: every conversation sharing the partition since, for a months-old conversation
minutes of records, on the POST's path and with the decider's other commands waiting behind it. With snapshots
(projections/conversation_snapshots.py writes them, kernel/snapshots.py says how a load uses them) it costs the
store's answer and a scan of what the partition took after its watermark.

The state holds ids, turn numbers, times, idempotency keys and a digest of the title, no words; its row names the
conversation's owner (the scope of its events), so an erasure deletes it (docs/encryption.md).
"""

import json

from commands.decider import Accepted, ConversationState, DecidedCommand, IdempotentResult, RunState
from kernel.snapshots import Snapshot, parsed_time

ConversationSnapshot = Snapshot[ConversationState]


# -- as stored: JSON (kernel/snapshots.py) ---------------------------------------------------------------------


def snapshot_from_json(text: str) -> ConversationSnapshot:
    document = json.loads(text)
    state = document["state"]
    return ConversationSnapshot(
        through=document["through"],
        state=ConversationState(
            conversation_id=state["conversation_id"],
            org_id=state["org_id"],
            workspace_id=state["workspace_id"],
            owner_id=state["owner_id"],
            title_digest=state["title_digest"],
            created_at=parsed_time(state["created_at"]),
            latest_turn_seq=state["latest_turn_seq"],
            latest_user_turn_seq=state["latest_user_turn_seq"],
            active_run_id=state["active_run_id"],
            runs={
                run_id: RunState(
                    run_id=r["run_id"], turn_seq=r["turn_seq"], parent_turn_seq=r["parent_turn_seq"], mode=r["mode"],
                    requested_at=parsed_time(r["requested_at"]), status=r["status"], cancel_requested=r["cancel_requested"],
                )
                for run_id, r in state["runs"].items()
            },
            idempotency={
                key: IdempotentResult(
                    request_fingerprint=i["request_fingerprint"], run_id=i["run_id"], turn_seq=i["turn_seq"],
                    recorded_at=parsed_time(i["recorded_at"]),
                )
                for key, i in state["idempotency"].items()
            },
            decided={
                command_id: DecidedCommand(
                    outcome=Accepted(run_id=d["outcome"]["run_id"], turn_seq=d["outcome"]["turn_seq"]),
                    decided_at=parsed_time(d["decided_at"]),
                )
                for command_id, d in state["decided"].items()
            },
        ),
    )

