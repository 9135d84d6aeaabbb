"""The key-store contract: every adapter of `kernel.key_store.KeyStore` passes these (docs/encryption.md).

Each adapter's factory opens handles on one store (a second handle: another process's view of the same keys):
plain key files, and key files wrapped by a KMS key on a real `moto_server` (`tests/moto_aws.py`).
"""

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from events.key_files import KeyFileStore
from events.kms_keys import KeyStoreUnavailable, KmsLocation, kms_key_store, parse_kms_url
from kernel.errors import Unavailable
from kernel.key_store import KeyStore, SubjectErased
from kernel.sealing import DATA_KEY_BYTES, Subject
from moto_aws import REGION, MotoServer, free_port
from turnlog.adapters import build_key_store
from turnlog.settings import Settings

ALICE = Subject(org_id="org_1", user_id="alice")
BOB = Subject(org_id="org_1", user_id="bob")
ORG = Subject(org_id="org_1")
CAROL = Subject(org_id="org_2", user_id="carol")

REPO_ROOT = Path(__file__).resolve().parents[2]


def kms_location(moto_server: MotoServer, directory: Path) -> KmsLocation:
    """A fresh KMS key on the moto server, wrapping key files in `directory`."""
    key_id = moto_server.client("kms").create_key(Description=f"turnlog test {uuid.uuid4().hex}")["KeyMetadata"]["KeyId"]
    return KmsLocation(key_id=key_id, directory=directory, region=REGION, endpoint_url=moto_server.endpoint_url)


@pytest.fixture(params=["key-files", "kms"])
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], KeyStore]:
    if request.param == "kms":
        location = kms_location(request.getfixturevalue("moto_server"), tmp_path / "keys")
        return lambda: kms_key_store(location)
    return lambda: KeyFileStore(root=tmp_path / "keys")


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


# -- the KMS adapter -----------------------------------------------------------------------------------


def test_kms_key_files_hold_only_the_kms_ciphertext(moto_server: MotoServer, tmp_path: Path) -> None:
    location = kms_location(moto_server, tmp_path / "keys")
    key = kms_key_store(location).data_key(ALICE)
    [key_file] = [path for path in (tmp_path / "keys").rglob("*") if path.is_file()]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    wrapped = key_file.read_bytes()
    assert key not in wrapped and len(wrapped) > DATA_KEY_BYTES
    # Without the KMS the directory opens nothing; with it, each wrapped key opens only as its own subject's.
    assert KeyFileStore(root=tmp_path / "keys").existing_key(BOB) is None
    bobs_file = key_file.with_name("bob.key")
    bobs_file.write_bytes(wrapped)
    os.chmod(bobs_file, 0o600)
    with pytest.raises(ValueError, match="does not open under KMS key"):
        kms_key_store(location).existing_key(BOB)
    assert kms_key_store(location).existing_key(ALICE) == key


def test_kms_keys_made_at_once_by_several_processes_agree(moto_server: MotoServer, tmp_path: Path) -> None:
    location = kms_location(moto_server, tmp_path / "keys")
    script = (
        "import sys; from pathlib import Path; from events.kms_keys import KmsLocation, kms_key_store;"
        " from kernel.sealing import Subject;"
        " location = KmsLocation(key_id=sys.argv[1], directory=Path(sys.argv[2]), region=sys.argv[3], endpoint_url=sys.argv[4]);"
        " print(kms_key_store(location).data_key(Subject(org_id='org_1', user_id='alice')).hex())"
    )
    arguments = [location.key_id, str(location.directory), REGION, moto_server.endpoint_url]
    processes = [
        subprocess.Popen([sys.executable, "-c", script, *arguments], cwd=REPO_ROOT, stdout=subprocess.PIPE) for _ in range(4)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(keys) == 1 and kms_key_store(location).existing_key(ALICE).hex().encode() in keys


def test_an_unreachable_or_refusing_kms_is_unavailable(moto_server: MotoServer, tmp_path: Path) -> None:
    unreachable = KmsLocation(key_id="alias/turnlog", directory=tmp_path / "a", region=REGION,
                              endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(KeyStoreUnavailable) as raised:
        kms_key_store(unreachable).data_key(ALICE)
    assert isinstance(raised.value, Unavailable) and "cannot be reached" in raised.value.detail  # 503, not a crash
    missing = KmsLocation(key_id="alias/no-such-key", directory=tmp_path / "b", region=REGION,
                          endpoint_url=moto_server.endpoint_url)
    with pytest.raises(KeyStoreUnavailable, match="no-such-key"):
        kms_key_store(missing).data_key(ALICE)


def test_a_kms_url_names_the_key_the_kms_and_the_directory(tmp_path: Path) -> None:
    default = tmp_path / "keys"
    assert parse_kms_url("kms:alias/turnlog", default_directory=default) == KmsLocation(key_id="alias/turnlog", directory=default)
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert parse_kms_url(f"kms:{arn}?region=eu-west-1&endpoint=http://127.0.0.1:4566&dir=/srv/keys", default_directory=default) == (
        KmsLocation(key_id=arn, directory=Path("/srv/keys"), region="eu-west-1", endpoint_url="http://127.0.0.1:4566")
    )
    for wrong in ("kms:", "kms:alias/x?colour=blue", "kms:alias/x?region=a&region=b", "kms:alias/x?endpoint=ftp://h"):
        with pytest.raises(ValueError):
            parse_kms_url(wrong, default_directory=default)
    settings = Settings(data_dir=tmp_path, keys_url="kms:alias/turnlog?region=us-east-1&endpoint=http://127.0.0.1:1", roles=())
    assert isinstance(build_key_store(settings), KeyFileStore)
    with pytest.raises(ValueError, match="kms:"):
        build_key_store(Settings(data_dir=tmp_path, keys_url="vault://x", roles=()))
