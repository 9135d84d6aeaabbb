"""API keys on a fleet: two API instances on one Kafka log each fold the `api-keys` topic, so a key created through
one works at once on the other, and a revocation through one is refused by the other within the view's bound.

Both instances are API-only (`--role api`), each with read models of its own: keys need only the log. They share
the data dir for the token-signing secret alone.
"""

import time
from collections.abc import Iterator

import httpx
import pytest

import e2e_server
import kafka_broker as kafka_harness
from projections.api_keys import DEFAULT_MAX_STALENESS_S

pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(300)]  # a broker of its own and two servers start first


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> Iterator[tuple[e2e_server.TurnlogServer, e2e_server.TurnlogServer]]:
    base = tmp_path_factory.mktemp("api_keys_fleet")
    broker = kafka_harness.TansuBroker(log_path=base / "tansu.log")
    broker.start()
    log_url = broker.log_url
    data_dir = base / "data"

    def api(name: str) -> e2e_server.TurnlogServer:
        store = f"chdb://{base / f'read-models-{name}'}"
        return e2e_server.TurnlogServer(
            data_dir=data_dir, startup_deadline_s=90, extra_args=("--log", log_url, "--store", store, "--role", "api")
        )

    first, second = api("a"), api("b")
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()
        broker.stop()


def test_a_key_made_on_one_instance_works_on_the_other_until_revoked_there(instances) -> None:
    on_a, on_b = instances
    admin = on_a.new_user(role="admin")
    with httpx.Client(base_url=on_a.base_url, headers=admin.headers, timeout=30) as as_admin:
        created = as_admin.post("/v1/admin/api-keys", json={"workspaceIds": [admin.workspace]})
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        program = {"Authorization": f"Bearer {key}"}

        # At once on the other instance: a key it has not seen makes it catch up with the log first.
        with httpx.Client(base_url=on_b.base_url, timeout=30) as b:
            assert b.get("/openai/v1/models", headers=program).status_code == 200
            listed = b.get("/v1/admin/api-keys", headers=admin.headers).json()["apiKeys"]
            assert [item["keyId"] for item in listed] == [created.json()["keyId"]]

            revoked = as_admin.delete(f"/v1/admin/api-keys/{created.json()['keyId']}")
            assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
            assert on_a_refuses(on_a, program)  # the instance that revoked it refuses it at once
            started = time.monotonic()
            while (answer := b.get("/openai/v1/models", headers=program)).status_code == 200:
                assert time.monotonic() - started < DEFAULT_MAX_STALENESS_S + 2, "instance B still accepts a revoked key"
            elapsed = time.monotonic() - started
    assert answer.status_code == 401, answer.text
    assert "revoked" in answer.json()["error"]["message"]
    print(f"revocation on instance A refused on instance B after {elapsed * 1000:.0f} ms")


def on_a_refuses(server: e2e_server.TurnlogServer, headers: dict[str, str]) -> bool:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        return client.get("/v1/conversations", headers=headers).status_code == 401
