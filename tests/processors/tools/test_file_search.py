"""`file_search` as a tool: the model's query searched over a real index and real embeddings, in the caller's scope alone;
the router beside the MCP servers; and how a tools file declares it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest

from events.values import ToolSpec
from kernel.envelope import Actor
from processors.retrieval import DocumentRetriever
from processors.tools.builtin import ToolRouter, tool_policies, with_builtin_tools
from processors.tools.catalog import ToolPolicy, ToolResult
from processors.tools.file_search import DEFAULT_POLICY, FILE_SEARCH, NOTHING_FOUND, PARAMETERS, SPEC, FileSearchTool
from processors.tools.offered import ToolCatalog
from processors.tools.tools_file import BUILTIN_SERVER, BUILTIN_TOOLS, ToolsFileError, parse_tools_file
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.index import IndexedChunk

pytestmark = pytest.mark.slow  # embeds with the real model

ANA = Actor(user_id="ana", org_id="acme", workspace_id="research")
BOB = Actor(user_id="bob", org_id="acme", workspace_id="research")
GLOBEX = Actor(user_id="gus", org_id="globex", workspace_id="research")  # the same workspace name, another org

TIDES = "Tides rise and fall twice a day because the moon's gravity pulls the oceans."
BUDGET = "The travel budget for the Lisbon offsite is twelve thousand euros."
SECRET = "Bob's private notes: the tide tables in the harbour are wrong on Sundays."
OTHER_ORG = "Globex handbook: tides are caused by the moon pulling the sea, every day twice."
OTHER_WORKSPACE = "Acme marketing: the moon makes the tides, a fact for our ocean campaign."
FOREIGN = ("Globex handbook", "Acme marketing", "Bob's private notes")


@pytest.fixture
async def index(tmp_path: Path, embedder) -> AsyncIterator[EmbeddedSearchIndex]:
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    placed = [
        ("file_tides", "acme", "research", "ana", "workspace", TIDES),
        ("file_budget", "acme", "research", "ana", "workspace", BUDGET),
        ("file_bob", "acme", "research", "bob", "owner", SECRET),
        ("file_globex", "globex", "research", "gus", "workspace", OTHER_ORG),
        ("file_marketing", "acme", "marketing", "ana", "workspace", OTHER_WORKSPACE),
    ]
    vectors = await embedder.embed([text for *_, text in placed])
    await index.upsert([
        IndexedChunk(chunk_id=f"{file_id}:0", file_id=file_id, org_id=org, workspace_id=workspace, owner_id=owner, acl=acl,
                     title=file_id.removeprefix("file_").title(), location="page 1", ordinal=0, text=text, vector=vector)
        for (file_id, org, workspace, owner, acl, text), vector in zip(placed, vectors, strict=True)
    ])
    try:
        yield index
    finally:
        await index.close()


@pytest.fixture
def retriever(index: EmbeddedSearchIndex, embedder) -> DocumentRetriever:
    return DocumentRetriever(index=index, embedder=embedder)


async def search(tool: FileSearchTool, actor: Actor, **arguments: object) -> ToolResult:
    return await tool.call(FILE_SEARCH, arguments, actor=actor, idempotency_key="run_1:call_1", timeout_s=30)


async def test_the_query_finds_the_callers_passages_as_text_and_as_sources(retriever) -> None:
    result = await search(FileSearchTool(retriever=retriever), ANA, query="Why are there two tides every day?")

    assert result.status == "completed" and not result.is_error
    assert result.sources[0].chunk_id == "file_tides:0" and result.sources[0].text == TIDES
    assert [source.marker for source in result.sources] == list(range(1, len(result.sources) + 1))
    # The text is unnumbered: the next step gives the passages their run-wide numbers.
    assert result.content.startswith(f"Tides, page 1\n{TIDES}") and "[1]" not in result.content


async def test_another_orgs_another_workspaces_and_another_users_private_passages_are_never_returned(retriever) -> None:
    tool = FileSearchTool(retriever=retriever)
    for query in ("tides moon gravity", OTHER_ORG, OTHER_WORKSPACE, SECRET):
        result = await search(tool, ANA, query=query)
        assert {source.file_id for source in result.sources} <= {"file_tides", "file_budget"}, query
        assert not any(foreign in result.content for foreign in FOREIGN), query
    # Naming another tenant's file narrows to nothing; it never widens the scope.
    named = await search(tool, ANA, query=OTHER_ORG, fileIds=["file_globex", "file_marketing", "file_bob"])
    assert (named.status, named.sources, named.content) == ("completed", (), NOTHING_FOUND)
    # The same query, from the other org and from the owner of the private notes: their own documents only.
    theirs = await search(tool, GLOBEX, query="tides moon")
    assert {source.file_id for source in theirs.sources} == {"file_globex"}
    bobs = await search(tool, BOB, query=SECRET)
    assert "file_bob" in {source.file_id for source in bobs.sources}


async def test_file_ids_narrow_the_search_to_those_files(retriever) -> None:
    result = await search(FileSearchTool(retriever=retriever), ANA, query="What is the travel budget for the Lisbon offsite, and why are there tides?", fileIds=["file_budget"])
    assert {source.file_id for source in result.sources} == {"file_budget"}


async def test_a_query_nothing_matches_completes_with_no_sources(retriever) -> None:
    result = await search(FileSearchTool(retriever=retriever), ANA, query="zqxv wplm")
    assert (result.status, result.sources, result.content) == ("completed", (), NOTHING_FOUND)


async def test_a_declared_policy_limits_who_may_search_and_its_token_limit_bounds_the_passages(retriever) -> None:
    tool = FileSearchTool(retriever=retriever, policy=ToolPolicy(server=BUILTIN_SERVER, name=FILE_SEARCH, orgs=("globex",)))
    assert await tool.list_tools(actor=ANA) == [] and await tool.list_tools(actor=GLOBEX) == [SPEC]
    refused = await search(tool, ANA, query="tides")
    assert (refused.status, refused.sources) == ("failed", ())
    assert refused.content == "no tool named 'file_search' is available"  # as if it did not exist

    small = FileSearchTool(retriever=retriever, policy=ToolPolicy(server=BUILTIN_SERVER, name=FILE_SEARCH, max_result_tokens=30))
    assert [source.chunk_id for source in (await search(small, ANA, query="tides and the travel budget")).sources] in (
        ["file_tides:0"], ["file_budget:0"],  # one passage fits in 30 tokens, not two
    )


async def test_arguments_follow_the_schema_it_offers() -> None:
    assert json.loads(SPEC.parameters) == PARAMETERS
    validator = jsonschema.Draft202012Validator(PARAMETERS)
    assert validator.is_valid({"query": "tides"}) and validator.is_valid({"query": "tides", "fileIds": ["file_1"]})
    assert not validator.is_valid({}) and not validator.is_valid({"query": ""})
    assert not validator.is_valid({"query": "tides", "scope": "everything"})  # nothing else, scope least of all
    for name in ("query", "fileIds"):
        assert PARAMETERS["properties"][name]["description"]


class BrokenRetriever:
    def __init__(self, *, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.delay_s = delay_s
        self.error = error

    async def search(self, scope, question):
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return []

    def count_tokens(self, text: str) -> int:
        return len(text.split())


async def test_a_failing_or_slow_index_and_bad_arguments_end_the_call_without_raising() -> None:
    failing = FileSearchTool(retriever=BrokenRetriever(error=ConnectionError("index down")))  # type: ignore[arg-type]
    assert (await search(failing, ANA, query="tides")).content == "the document search failed: ConnectionError"
    slow = await FileSearchTool(retriever=BrokenRetriever(delay_s=5)).call(  # type: ignore[arg-type]
        FILE_SEARCH, {"query": "tides"}, actor=ANA, idempotency_key="k", timeout_s=0.05
    )
    assert slow.status == "timed_out"
    bad = FileSearchTool(retriever=BrokenRetriever())  # type: ignore[arg-type]
    assert (await search(bad, ANA, query=" ")).status == "failed"
    assert (await search(bad, ANA, query="tides", fileIds="file_1")).content == "fileIds: must be a list of file ids"


class ServersDouble:
    """The MCP servers' executor, as the router sees it: one tool, `add`, and what it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        return [ToolSpec(name="add", description="a + b", parameters="{}")]

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        return {"sleep": "the local server is unavailable: down"}

    async def call(self, tool, arguments, *, actor, idempotency_key, timeout_s) -> ToolResult:
        self.calls.append(tool)
        return ToolResult.completed("5", duration_ms=1)


async def test_the_router_sends_file_search_to_the_index_and_the_rest_to_the_servers(retriever) -> None:
    servers = ServersDouble()
    config = parse_tools_file('[[servers]]\nname = "local"\ntransport = "stdio"\ncommand = "x"\n[[tools]]\nserver = "local"\nname = "add"\n')
    router = with_builtin_tools(config, servers=servers, retriever=retriever)
    assert isinstance(router, ToolRouter)
    await router.start()
    assert [spec.name for spec in await router.list_tools(actor=ANA)] == ["add", FILE_SEARCH]
    assert router.unavailable(actor=ANA) == {"sleep": "the local server is unavailable: down"}
    found = await router.call(FILE_SEARCH, {"query": "tides"}, actor=ANA, idempotency_key="k", timeout_s=30)
    added = await router.call("add", {"a": 2, "b": 3}, actor=ANA, idempotency_key="k", timeout_s=30)
    await router.close()
    assert found.sources and (added.content, servers.calls) == ("5", ["add"])
    assert servers.started and servers.closed
    # Without a document search there is no file_search: the servers' executor alone.
    assert with_builtin_tools(config, servers=servers, retriever=None) is servers

    # The catalog offers it, with its rules, to everyone the default policy admits.
    catalog = ToolCatalog(executor=router, policies=tool_policies(config, searches=True))
    rules = await catalog.rules(GLOBEX)
    assert rules[FILE_SEARCH].idempotent and rules[FILE_SEARCH].parameters == PARAMETERS
    assert FILE_SEARCH not in tool_policies(config, searches=False)


def test_a_tools_file_may_declare_file_search_on_the_builtin_server_to_limit_it() -> None:
    config = parse_tools_file(
        '[[tools]]\nserver = "builtin"\nname = "file_search"\norgs = ["acme"]\ntimeout_s = 5\nmax_result_tokens = 500\n'
    )
    assert config.servers == () and config.served().tools == ()
    assert tool_policies(config, searches=True)[FILE_SEARCH] == ToolPolicy(
        server="builtin", name="file_search", orgs=("acme",), timeout_s=5.0, max_result_tokens=500,
    )
    assert DEFAULT_POLICY.server == BUILTIN_SERVER and FILE_SEARCH in BUILTIN_TOOLS


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        pytest.param('[[tools]]\nserver = "builtin"\nname = "web"\n', "tools[0].name", "turnlog has no built-in tool 'web'", id="unknown"),
        pytest.param(
            '[[servers]]\nname = "s"\ntransport = "stdio"\ncommand = "x"\n[[tools]]\nserver = "s"\nname = "file_search"\n',
            "tools[0].name", "'file_search' is turnlog's own tool; declare it with server = 'builtin'", id="on a server",
        ),
        pytest.param(
            '[[servers]]\nname = "builtin"\ntransport = "stdio"\ncommand = "x"\n[[tools]]\nserver = "builtin"\nname = "file_search"\n',
            "servers[0].name", "'builtin' is reserved", id="reserved server name",
        ),
        pytest.param('[[tools]]\nserver = "s"\nname = "t"\n', "servers", "declare at least one [[servers]] table", id="no servers"),
    ],
)
def test_the_builtin_server_and_its_tools_names_are_reserved(text: str, field: str, problem: str) -> None:
    with pytest.raises(ToolsFileError) as caught:
        parse_tools_file(text, source="tools.toml")
    assert caught.value.field == field and problem in caught.value.problem
