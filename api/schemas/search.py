"""Search answers: the ranked passages a caller may see for a query."""

from __future__ import annotations

from pydantic import Field

from api.schemas.base import ResponseModel


class SearchPassage(ResponseModel):
    """One chunk of a document, as the index ranked it."""

    file_id: str
    chunk_id: str
    chunk: int = Field(description="the chunk's position within its file, from 0")
    title: str = Field(description="the document's title (or file name)")
    location: str = Field(description="where in the document: 'page 3', a heading; '' when unknown")
    text: str
    score: float = Field(description="the fused (reciprocal rank fusion) score: higher ranks first; compares within one answer")
    similarity: float | None = Field(default=None, description="cosine similarity of the chunk to the query, where the index reports it")
    rerank_score: float | None = Field(
        default=None,
        description="the reranking model's score where the server runs one (--rerank-model) and it reordered this passage:"
        " the reranked passages come first, highest score first; null for the rest and where no reranker runs",
    )


class SearchResults(ResponseModel):
    """`POST /v1/search`, best first."""

    passages: list[SearchPassage]
    covered: bool = Field(
        description="whether the best passage passes the relevance gate a turn applies: false means a turn would answer "
        "that the documents do not cover the question"
    )
