"""Credential templates: only the environment and the caller fill them, and each caller's values stay apart."""

from __future__ import annotations

import pytest

from kernel.envelope import Actor
from processors.tools.catalog import DeclarationError
from processors.tools.credentials import CredentialTemplate, MissingEnvironment, fingerprint, render_all

ALICE = Actor(user_id="user_alice", org_id="org_a", workspace_id="ws_a1")
BOB = Actor(user_id="user_bob", org_id="org_a", workspace_id="ws_a1")


def test_a_template_renders_the_environment_and_the_caller() -> None:
    template = CredentialTemplate.parse("Bearer ${env:API_KEY}; ${user}/${org}/${workspace} costs $5 {literally}")

    rendered = template.render(actor=ALICE, environ={"API_KEY": "k-123"})

    assert rendered == "Bearer k-123; user_alice/org_a/ws_a1 costs $5 {literally}"
    assert template.environment_names == ("API_KEY",)


def test_plain_text_is_kept_as_it_is() -> None:
    assert CredentialTemplate.parse("static-token").render(actor=ALICE, environ={}) == "static-token"
    assert CredentialTemplate.parse("").render(actor=ALICE, environ={}) == ""


def test_an_unset_variable_is_named_and_its_absence_is_not_papered_over() -> None:
    template = CredentialTemplate.parse("${env:MISSING}")

    with pytest.raises(MissingEnvironment, match="the environment variable MISSING is not set"):
        template.render(actor=ALICE, environ={"OTHER": "x"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${token}", "${token} is not a placeholder turnlog fills"),
        ("${arguments.user}", "is not a placeholder turnlog fills"),
        ("${}", "is not a placeholder turnlog fills"),
        ("${env:}", "'' is not an environment variable name"),
        ("${env:A-B}", "'A-B' is not an environment variable name"),
        ("Bearer ${env:KEY", "opens '${' without closing it"),
    ],
)
def test_anything_else_inside_a_placeholder_is_refused(text: str, problem: str) -> None:
    with pytest.raises(DeclarationError) as caught:
        CredentialTemplate.parse(text)

    assert problem in caught.value.problem


def test_fingerprints_differ_when_any_rendered_value_differs() -> None:
    templates = {"Authorization": CredentialTemplate.parse("Bearer ${env:KEY}"), "X-User": CredentialTemplate.parse("${user}")}
    environ = {"KEY": "k"}

    alice = render_all(templates, actor=ALICE, environ=environ)
    bob = render_all(templates, actor=BOB, environ=environ)

    assert alice == {"Authorization": "Bearer k", "X-User": "user_alice"}
    assert fingerprint("s", alice) != fingerprint("s", bob)
    assert fingerprint("s", alice) == fingerprint("s", dict(reversed(alice.items())))
    assert fingerprint("s", alice) != fingerprint("other", alice)
    assert fingerprint("s", {"a": "bc"}) != fingerprint("s", {"ab": "c"})
    assert "Bearer" not in fingerprint("s", alice)
