"""The whole lifecycle with its read models on a ClickHouse server (the HTTP adapter), not chDB."""

import e2e_server


async def test_a_server_on_clickhouse_read_models_serves_turns(clickhouse_server, tmp_path) -> None:
    await clickhouse_server.create_database("turnlog_e2e")
    server = e2e_server.TurnlogServer(
        data_dir=tmp_path / "data", answer_tokens=6, extra_args=("--store", clickhouse_server.url("turnlog_e2e"))
    ).start()
    try:
        user = server.new_user()
        async with user.client() as client:
            conversation_id = await e2e_server.create_conversation(client, user.workspace)
            accepted = await e2e_server.submit_turn(client, conversation_id, "hello over http")
            run = await e2e_server.wait_for_run(client, accepted["runId"])
            turns = await e2e_server.list_turns(client, conversation_id)
    finally:
        server.stop()
    assert run["status"] == "completed"
    assert [(turn["turnSeq"], turn["role"], turn["state"]) for turn in turns] == [
        (1, "user", "completed"),
        (2, "assistant", "completed"),
    ]
    # The rows really live in the ClickHouse server's database, not in a local chDB.
    assert not (tmp_path / "data" / "read-models").exists()
