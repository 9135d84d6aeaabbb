"""Which members of a group a restarted process takes for its dead predecessor's: only those minted for its name."""

from events.kafka.predecessors import predecessors

UUID = "45827a51-a179-48e8-882f-f9120d01800b"


def test_a_member_minted_for_the_client_id_is_a_predecessor() -> None:
    assert predecessors([f"turnlog-worker-{UUID}"], "turnlog-worker") == [f"turnlog-worker-{UUID}"]


def test_another_instance_whose_name_begins_with_this_one_is_not() -> None:
    assert predecessors([f"turnlog-worker-2-{UUID}", f"turnlog-worker-x{UUID}"], "turnlog-worker") == []


def test_other_clients_and_ids_not_ending_in_a_uuid_are_not() -> None:
    members = [f"faust-0.15.3-{UUID}", "turnlog-worker-static-id", f"turnlog-worker-{UUID.upper()}", "turnlog-worker-"]
    assert predecessors(members, "turnlog-worker") == []
