"""What a caller's runs may call: the tools file's policies joined with what the servers offer, cached briefly.

The prompt builder offers these tools to the model (as `ToolSpec`s); the loop checks each proposed
call against the same tools' rules (schema, timeout, idempotency, approval). Asking the servers
costs a round trip, so each caller's list is kept for `ttl_s`.
"""

import json
import time
from collections.abc import Callable, Mapping

from events.values import ToolSpec
from kernel.envelope import Actor
from processors.tools.catalog import ToolExecutor, ToolPolicy, allowed
from processors.tools.loop import ToolRules


class ToolCatalog:
    """The tools a caller may use now, as specs for the model and as rules for the loop."""

    def __init__(
        self,
        *,
        executor: ToolExecutor,
        policies: Mapping[str, ToolPolicy],
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._executor = executor
        self._policies = policies
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[tuple[str, str, str], tuple[float, list[ToolSpec]]] = {}

    async def specs(self, actor: Actor, *, narrowed_to: tuple[str, ...] = ()) -> list[ToolSpec]:
        """The tools `actor` may use that their servers offer now (only those in `narrowed_to`, when given)."""
        key = (actor.org_id, actor.workspace_id, actor.user_id)
        cached = self._cached.get(key)
        if cached is None or self._clock() - cached[0] > self._ttl_s:
            offered = await self._executor.list_tools(actor=actor)
            cached = (self._clock(), [spec for spec in offered if self._may_use(spec.name, actor)])
            self._cached[key] = cached
        return [spec for spec in cached[1] if not narrowed_to or spec.name in narrowed_to]

    async def rules(self, actor: Actor) -> dict[str, ToolRules]:
        """The loop's rules for every tool `actor` may use now."""
        return {
            spec.name: ToolRules(
                name=spec.name, parameters=json.loads(spec.parameters or "{}"), timeout_s=policy.timeout_s,
                idempotent=policy.idempotent, require_approval=policy.require_approval, long=policy.long,
            )
            for spec in await self.specs(actor)
            if (policy := self._policies.get(spec.name)) is not None
        }

    def max_result_tokens(self, tool: str) -> int | None:
        policy = self._policies.get(tool)
        return policy.max_result_tokens if policy is not None else None

    def _may_use(self, tool: str, actor: Actor) -> bool:
        policy = self._policies.get(tool)
        return policy is not None and allowed(policy, actor)
