"""The composition root: builds every adapter from settings and runs every role in one process."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api.auth import load_or_create_secret
from api.context import ApiContext
from commands.bus import CommandBus
from commands.catalog import COMMAND_TYPES
from commands.handler import CommandHandler
from events.catalog import EVENT_TYPES
from events.codec import AvroCodec
from events.embedded import EmbeddedLog
from inference.engine import InferenceEngine
from inference.worker import InferenceWorker
from processors.prompting import PromptBuilder, PromptPolicy
from processors.runtime import run_processor
from processors.watchdog import RunWatchdog
from projections.chdb import ChdbStore
from projections.projector import ReadModelProjector
from projections.read_models import ReadModels
from turnlog.settings import Settings

logger = logging.getLogger(__name__)


def build_codec() -> AvroCodec:
    return AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))


def build_engine(settings: Settings) -> InferenceEngine:
    if settings.engine == "scripted":
        from inference.scripted import ScriptedEngine

        return ScriptedEngine(token_delay_s=settings.token_delay_ms / 1000, answer_tokens=settings.answer_tokens)
    if settings.engine == "cpu":
        from inference.cpu import CpuEngine  # imports torch: only when asked for

        return CpuEngine()
    raise ValueError(f"unknown engine {settings.engine!r}; choose cpu or scripted")


@asynccontextmanager
async def running_system(settings: Settings) -> AsyncIterator[ApiContext]:
    """Start the log, read models, engine and every processor; yield what the API needs; stop them all."""
    codec = build_codec()
    secret = load_or_create_secret(settings.data_dir)
    log = EmbeddedLog(path=settings.log_path)
    await log.start()
    store = ChdbStore(str(settings.read_models_path))
    engine = build_engine(settings)
    tasks: list[asyncio.Task] = []
    bus = CommandBus(log=log, codec=codec)
    try:
        read_models = ReadModels(store)
        await read_models.create_tables()
        projector = ReadModelProjector(log=log, codec=codec, read_models=read_models)
        await projector.start()
        await engine.start()
        await bus.start()
        policy = PromptPolicy(max_output_tokens=settings.max_output_tokens)
        processors = [
            CommandHandler(log=log, codec=codec).processor(),
            PromptBuilder(log=log, codec=codec, policy=policy).processor(),
            projector.processor(),
        ]
        tasks += [asyncio.create_task(run_processor(p, log=log, codec=codec), name=p.group) for p in processors]
        worker = InferenceWorker(log=log, codec=codec, engine=engine, heartbeat_s=settings.heartbeat_s)
        watchdog = RunWatchdog(log=log, codec=codec, lease_s=settings.run_lease_s)
        tasks += [asyncio.create_task(worker.run(), name="inference-worker"), asyncio.create_task(watchdog.run(), name="watchdog")]
        for task in tasks:
            task.add_done_callback(_report_crash)
        yield ApiContext(bus=bus, read_models=read_models, caught_up=projector.caught_up, log=log, codec=codec, secret=secret)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.close()
        await engine.close()
        await store.close()
        await log.close()


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())
