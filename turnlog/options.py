"""Command-line options that also read `TURNLOG_*` variables, checked the same way whichever way they come."""

import argparse
import math
import os
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any, NoReturn


def environment_variable(flag: str) -> str:
    """The variable that sets an option: `--run-lease-s` is `TURNLOG_RUN_LEASE_S`."""
    return "TURNLOG_" + flag.removeprefix("--").replace("-", "_").upper()


class _Repeated(argparse.Action):
    """A flag given once per value; its first use replaces the default, so flags win over the environment."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given = getattr(namespace, self.dest, None)
        earlier = [] if given is None or given is self.default else list(given)
        setattr(namespace, self.dest, [*earlier, values])


class CommandParser(argparse.ArgumentParser):
    """A parser whose options also come from `TURNLOG_*` variables, read when it parses, before `--help`.

    A variable's value goes through its option's own `type=` and `choices=`, so a bad one is refused the
    way a bad flag is: one line naming the variable, the option and what it accepts, and exit status 2.
    Only the command being run reads its variables (`serve --role` and `worker --role` accept different
    values); an empty variable counts as unset, and a repeatable option's variable is a comma-separated list.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # variable -> (its option, the option's own default, whether the option is required without it)
        self._variables: dict[str, tuple[argparse.Action, Any, bool]] = {}

    def add_option(
        self, flag: str, *, help: str = "", default: Any = None, shown_default: str | None = None,
        repeated: bool = False, **options: Any,
    ) -> argparse.Action:
        """Add `flag` with its variable; `--help` shows the default (or `shown_default`) and the variable's name."""
        variable = environment_variable(flag)
        origin = f"env {variable}, separated by commas" if repeated else f"env {variable}"
        if options.get("required"):
            origin = f"required; {origin}"
        elif shown_default is not None or default is not None:
            origin = f"default: {shown_default if shown_default is not None else _shown(default)}; {origin}"
        text = f"{help} ({origin})" if help else origin
        action = self.add_argument(
            flag, default=default, help=text.replace("%", "%%"), action=_Repeated if repeated else "store", **options
        )
        self._variables[variable] = (action, action.default, action.required)
        return action

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        self._read_environment()
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """One line, without the usage: the message names the option and what it accepts."""
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _read_environment(self) -> None:
        for variable, (action, default, required) in self._variables.items():
            text = os.environ.get(variable, "")
            if isinstance(action, _Repeated):
                items = [item.strip() for item in text.split(",") if item.strip()]
                value = [self._checked(variable, action, item) for item in items] if items else None
            else:
                value = self._checked(variable, action, text) if text.strip() else None
            action.default, action.required = (default, required) if value is None else (value, False)

    def _checked(self, variable: str, action: argparse.Action, text: str) -> Any:
        """`text` converted and checked exactly as the option's flag would be."""
        flag = action.option_strings[0]
        probe = argparse.ArgumentParser(prog=self.prog, add_help=False, exit_on_error=False)
        probe.add_argument(flag, dest="value", type=action.type, choices=action.choices)
        try:
            return probe.parse_args([f"{flag}={text}"]).value
        except argparse.ArgumentError as error:
            self.error(f"{variable} ({error.argument_name}): {error.message}")


def _shown(default: Any) -> str:
    return f"{default:g}" if isinstance(default, float) else str(default)


def integer_option(*, at_least: int, at_most: int | None = None) -> Callable[[str], int]:
    accepted = f"an integer from {at_least} to {at_most}" if at_most is not None else f"an integer >= {at_least}"

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < at_least or (at_most is not None and value > at_most):
            raise argparse.ArgumentTypeError(f"must be {accepted}, got {text!r}")
        return value

    return integer


def number_option(*, above: float | None = None, at_least: float | None = None) -> Callable[[str], float]:
    accepted = f"a number > {above:g}" if above is not None else f"a number >= {at_least:g}"

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        in_range = value > above if above is not None else value >= at_least
        if not (math.isfinite(value) and in_range):
            raise argparse.ArgumentTypeError(f"must be {accepted}, got {text!r}")
        return value

    return number


_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


def instance_id_option(text: str) -> str:
    """A process's stable name in a fleet; `{hostname}` in it is replaced by the host's name (a pod's, a container's)."""
    name = text.replace("{hostname}", socket.gethostname())
    if not _INSTANCE_ID.fullmatch(name):
        raise argparse.ArgumentTypeError(f"must be 1-100 letters, digits, '.', '_' or '-', got {name!r}")
    return name
