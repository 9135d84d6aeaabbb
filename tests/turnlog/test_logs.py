"""turnlog's log lines: JSON or text, each with its time, level, logger, message and what it is about."""

import io
import json
import logging

import pytest

from kernel import log_context
from turnlog.logs import configure_logging, default_log_format


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_context_and_the_extra_fields(restored_logging) -> None:
    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)
    with log_context.bound(request_id="req_1", org_id="org_1", run_id="run_1"):
        logging.getLogger("turnlog.test").info("run %s went %s", "run_1", "well", extra={"status": 200})
    logging.getLogger("turnlog.test").debug("below the level")
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record.pop("timestamp").endswith("Z")
    assert record == {
        "level": "info", "logger": "turnlog.test", "message": "run run_1 went well",
        "request_id": "req_1", "org_id": "org_1", "run_id": "run_1", "status": 200,
    }


def test_a_json_line_keeps_the_exception_in_one_line(restored_logging) -> None:
    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)
    try:
        raise ValueError("the reason")
    except ValueError:
        logging.getLogger("turnlog.test").exception("it failed")
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["message"] == "it failed"
    assert "ValueError: the reason" in record["exception"] and "Traceback" in record["exception"]


def test_text_lines_put_the_fields_after_the_message(restored_logging) -> None:
    out = io.StringIO()
    configure_logging("warning", log_format="text", stream=out)
    with log_context.bound(request_id="req_9"):
        logging.getLogger("turnlog.test").warning("slow answer")
    line = out.getvalue().strip()
    assert line.endswith(" WARNING turnlog.test: slow answer request_id=req_9"), line


def test_json_unless_a_person_reads_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert default_log_format(io.StringIO()) == "json"
    assert default_log_format(Terminal()) == "text"


def test_an_unknown_format_is_refused(restored_logging) -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("info", log_format="xml", stream=io.StringIO())
