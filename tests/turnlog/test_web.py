"""`turnlog serve`'s web options: the sign-in link it prints on the embedded defaults, and `--cors-origins`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

from api.sign_in_codes import LOCAL_PRINCIPAL
from turnlog.settings import Settings
from turnlog.web import sign_in_url, with_sign_in_link

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def system():
    yield "context"


def test_the_link_names_an_address_a_browser_here_can_open() -> None:
    assert sign_in_url(host="127.0.0.1", port=8000, code="c") == "http://127.0.0.1:8000/signin?code=c"
    assert sign_in_url(host="0.0.0.0", port=80, code="c") == "http://127.0.0.1:80/signin?code=c"
    assert sign_in_url(host="::", port=80, code="c") == "http://[::1]:80/signin?code=c"
    assert sign_in_url(host="fe80::1", port=80, code="c") == "http://[fe80::1]:80/signin?code=c"


def test_on_the_embedded_log_a_link_is_printed_once_the_system_is_up_and_it_signs_in_once(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, host="0.0.0.0", port=8123)
    start, codes = with_sign_in_link(settings, system)
    assert codes is not None
    printed = io.StringIO()

    async def run() -> None:
        with contextlib.redirect_stderr(printed):
            async with start() as context:
                assert context == "context"

    asyncio.run(run())
    [code] = re.findall(r"http://127\.0\.0\.1:8123/signin\?code=([A-Za-z0-9_-]+)", printed.getvalue())
    assert "once, within 15 minutes" in printed.getvalue()
    assert codes.redeem(code) == LOCAL_PRINCIPAL and codes.redeem(code) is None


def test_on_kafka_no_link_is_printed_and_no_code_is_honoured(tmp_path) -> None:
    start, codes = with_sign_in_link(Settings(data_dir=tmp_path, log_url="kafka://broker:9092"), system)
    assert start is system and codes is None


def test_a_bad_cors_origin_is_one_line_naming_the_option() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "turnlog.cli", "serve", "--cors-origins", "https://ok.example,chat.example.com"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "--cors-origins" in completed.stderr
    assert "'chat.example.com' is not an origin" in completed.stderr
