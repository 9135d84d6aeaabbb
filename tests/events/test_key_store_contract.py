"""The key-store contract: every adapter of `kernel.key_store.KeyStore` passes these (docs/encryption.md).

A KMS adapter joins `ADAPTERS` with a factory that opens two handles on one store (two processes' view
of the same keys); the local key files pass today.
"""

import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from events.key_files import KeyFileStore
from kernel.key_store import KeyStore, SubjectErased
from kernel.sealing import DATA_KEY_BYTES, Subject

ALICE = Subject(org_id="org_1", user_id="alice")
BOB = Subject(org_id="org_1", user_id="bob")
ORG = Subject(org_id="org_1")
CAROL = Subject(org_id="org_2", user_id="carol")

REPO_ROOT = Path(__file__).resolve().parents[2]

# Each factory: a directory -> a new handle on the store there (a second call: another process's handle).
ADAPTERS: dict[str, Callable[[Path], KeyStore]] = {"key-files": lambda root: KeyFileStore(root=root / "keys")}


@pytest.fixture(params=sorted(ADAPTERS))
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], KeyStore]:
    return lambda: ADAPTERS[request.param](tmp_path)


def test_a_subject_gets_one_key_that_every_handle_reads(opened) -> None:
    keys, other = opened(), opened()
    key = keys.data_key(ALICE)
    assert len(key) == DATA_KEY_BYTES
    assert keys.data_key(ALICE) == key and other.data_key(ALICE) == key and other.existing_key(ALICE) == key
    assert keys.data_key(BOB) != key and keys.data_key(ORG) not in (key, keys.data_key(BOB))


def test_opening_never_makes_a_key(opened) -> None:
    keys = opened()
    assert keys.existing_key(ALICE) is None
    assert opened().existing_key(ALICE) is None
    assert not keys.is_erased(ALICE)


def test_destroying_a_users_key_erases_them_alone_for_every_handle(opened) -> None:
    keys, other = opened(), opened()
    bob_key = keys.data_key(BOB)
    keys.data_key(ALICE)
    other.existing_key(ALICE)  # cached there too
    assert keys.destroy(ALICE) == 1
    assert keys.existing_key(ALICE) is None and other.existing_key(ALICE) is None
    assert keys.is_erased(ALICE) and other.is_erased(ALICE)
    with pytest.raises(SubjectErased):
        opened().data_key(ALICE)  # never made again, by anyone
    assert other.existing_key(BOB) == bob_key and not keys.is_erased(BOB)
    assert keys.destroy(ALICE) == 0  # idempotent


def test_destroying_an_org_destroys_its_users_keys_and_no_other_orgs(opened) -> None:
    keys = opened()
    for subject in (ALICE, BOB, ORG):
        keys.data_key(subject)
    carol_key = keys.data_key(CAROL)
    assert keys.destroy(ORG) == 3
    for subject in (ALICE, BOB, ORG):
        assert keys.existing_key(subject) is None and keys.is_erased(subject)
    with pytest.raises(SubjectErased):
        keys.data_key(Subject(org_id="org_1", user_id="dave"))  # a user of an erased org
    assert keys.existing_key(CAROL) == carol_key and not keys.is_erased(CAROL)


def test_key_files_made_at_once_by_several_processes_agree(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from events.key_files import KeyFileStore; from kernel.sealing import Subject;"
        " print(KeyFileStore(root=Path(sys.argv[1])).data_key(Subject(org_id='org_1', user_id='alice')).hex())"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "keys")], cwd=REPO_ROOT, stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(keys) == 1 and KeyFileStore(root=tmp_path / "keys").existing_key(ALICE).hex().encode() in keys


def test_key_files_are_private_and_hold_only_the_key(tmp_path: Path) -> None:
    KeyFileStore(root=tmp_path / "keys").data_key(ALICE)
    [key_file] = [path for path in (tmp_path / "keys").rglob("*") if path.is_file()]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert key_file.stat().st_size == DATA_KEY_BYTES
    assert not list((tmp_path / "keys").rglob(".tmp-*"))  # written whole, nothing left behind


def test_ids_that_are_not_file_names_never_become_paths(tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    odd = Subject(org_id="..", user_id="auth0|alice@example.com")
    key = keys.data_key(odd)
    assert keys.existing_key(odd) == key
    assert all(path.resolve().is_relative_to((tmp_path / "keys").resolve()) for path in tmp_path.rglob("*"))
    assert keys.destroy(odd) == 1 and keys.existing_key(odd) is None
