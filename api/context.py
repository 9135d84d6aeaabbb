"""What the API needs from the rest of the system, handed in by the composition root (on `app.state`)."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from api.auth import DEFAULT_MAX_TOKEN_TTL_S
from api.edge import EdgeLimiter
from api.health import Readiness
from api.oidc import OidcVerifier
from commands.bus import CommandBus
from commands.governance.bus import GovernanceBus
from commands.governance.tiers_file import GovernanceConfig
from events.blobs import BlobStore
from kernel.codec import AvroCodec
from kernel.key_store import KeyStore
from kernel.log import EventLog
from processors.retrieval import DocumentRetriever
from projections.api_keys import ApiKeyView
from projections.read_models import ReadModels


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_turn_body_bytes: int = 256 * 1024
    max_small_body_bytes: int = 16 * 1024
    max_upload_bytes: int = 25 * 1024 * 1024  # one uploaded file (`--max-upload-mb`)
    max_page_size: int = 100
    default_page_size: int = 20
    keepalive_s: float = 15.0
    max_token_ttl_s: int = DEFAULT_MAX_TOKEN_TTL_S  # the longest `exp - iat` a bearer token or session may have (`--max-token-ttl-s`)
    run_events_retention: timedelta | None = None  # a run's stream expires (410) this long after it started; None: never


@dataclass(frozen=True, kw_only=True)
class Governance:
    """Credits, budgets, rate limits and abuse controls, on when a tiers file is given (docs/governance.md)."""

    bus: GovernanceBus  # admissions and operators' requests, answered by the governance decider; `bus.view` folds orgs
    config: GovernanceConfig  # the tiers file: for the rate-limit fields of answers that are not admissions
    edge: EdgeLimiter  # requests whose token does not authenticate, per client address


@dataclass(frozen=True, kw_only=True)
class ApiContext:
    bus: CommandBus
    read_models: ReadModels
    # Waits until the read models hold every conversation event now on the log (for a key's partition;
    # `topic=DOCUMENTS` for files).
    caught_up: Callable[..., Awaitable[None]]
    log: EventLog
    codec: AvroCodec
    secret: bytes
    blobs: BlobStore  # where uploads' bytes go; events carry only their digest
    limits: Limits = Limits()
    governance: Governance | None = None  # None: no tiers file, nothing is limited and no admission is asked
    api_keys: ApiKeyView | None = None  # every API key on the log, followed (None: API keys are not accepted)
    readiness: Readiness | None = None  # what `GET /readyz` checks (api/health.py); None: it answers 503 "starting"
    oidc: OidcVerifier | None = None  # an OIDC provider whose bearer tokens are accepted too (api/oidc.py); None: turnlog's only
    keys: KeyStore | None = None  # the data keys content is sealed with; None: erasure is not offered (docs/encryption.md)
    search: DocumentRetriever | None = None  # `POST /v1/search` (api/search.py); None: this process does not search documents
