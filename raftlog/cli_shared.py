"""The CLI's shared options: accepted before or after the subcommand, each read from one RAFTLOG_* variable.

`SharedOptionsGroup` is the click group class of `raftlog` and of its subgroups. It does
three things for every command added to it, so a new command gets them by declaring the
option the usual way (`@click.option("--peers", ...)`):

- argument placement: a shared option given anywhere on the command line (before the
  subcommand, between a subgroup and its subcommand, or after the subcommand) is handed
  to the deepest command on the path that declares it (`hoist_shared_options`). When it
  is given more than once the last one wins, so `raftlog --timeout 5 read --timeout 9`
  waits 9 s;
- environment: each shared option reads `RAFTLOG_<OPTION>` (RAFTLOG_PEERS, ...) after the
  command's own `RAFTLOG_<COMMAND>_<OPTION>` (which click's auto_envvar_prefix has always
  read), and `--help` names both;
- units: `--timeout` takes a duration with a unit (`500ms`, `10s`, `2m`) or plain seconds.

It also gives exit status 3 to a command that failed because no member could be reached
or no leader could be found (raftlog.errors.Unreachable, NoLeader): scripts tell "the
cluster is down" (3) from "the request failed" (1) and "bad usage" (2).
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import click

from raftlog.errors import NoLeader, Unreachable

# option string -> its environment variable
SHARED_OPTIONS: dict[str, str] = {
    "--peers": "RAFTLOG_PEERS",
    "--cluster-id": "RAFTLOG_CLUSTER_ID",
    "--timeout": "RAFTLOG_TIMEOUT",
    "--json": "RAFTLOG_JSON",
    "--tls-cert": "RAFTLOG_TLS_CERT",
    "--tls-key": "RAFTLOG_TLS_KEY",
    "--tls-ca": "RAFTLOG_TLS_CA",
    "--secret-file": "RAFTLOG_SECRET_FILE",
}
SHARED_FLAGS = frozenset({"--json"})         # the shared options that take no value

EXIT_FAILED, EXIT_UNREACHABLE = 1, 3       # exit statuses: a failed command; no member reachable or no leader

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Duration(click.ParamType):
    """A duration: `500ms`, `10s`, `1.5m`, `1h`, or a plain number in `unit` (what the option always took).

    The value is a float in `unit` ("s" or "ms"), at least `minimum` of it.
    """

    name = "duration"

    def __init__(self, unit: str = "s", minimum: float = 0.0) -> None:
        self.unit = unit
        self.minimum = minimum

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            amount = float(value)
        else:
            match = _DURATION.match(str(value))
            if match is None:
                self.fail(f"{value!r}: expected a duration such as 500ms, 10s, 2m (or a number of {self.unit})",
                          param, ctx)
            given = match.group(2) or self.unit
            amount = float(match.group(1)) * _UNIT_SECONDS[given] / _UNIT_SECONDS[self.unit]
        if amount < self.minimum:
            self.fail(f"{value!r}: must be at least {self.minimum:g}{self.unit}", param, ctx)
        return amount


class Milliseconds(Duration):
    """A duration as a whole number of milliseconds: `50ms`, `0.05s`, or a plain number of milliseconds."""

    name = "duration"

    def __init__(self) -> None:
        super().__init__(unit="ms")

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        return round(super().convert(value, param, ctx))


def _option(command: click.Command, token: str) -> Optional[click.Option]:
    """The option of `command` that `token` (an option string, maybe `--opt=value`) names, if any."""
    name = token.partition("=")[0]
    for param in command.params:
        if isinstance(param, click.Option) and (name in param.opts or name in param.secondary_opts):
            return param
    return None


def _takes_value(option: Optional[click.Option], token: str) -> bool:
    """True when `token` is an option whose value is the next argument."""
    return option is not None and not option.is_flag and not option.count and "=" not in token


def hoist_shared_options(root: click.Group, args: Sequence[str]) -> list[str]:
    """`args` with every shared option moved to the deepest command on the path that declares it.

    Within that command the moved options go first, in their original order, before the
    command's own arguments: a later occurrence still overrides an earlier one. A shared
    option no command on the path declares goes to the last command (click then reports it).
    Nothing after `--` is touched.
    """
    levels: list[tuple[click.Command, list[str]]] = [(root, [])]
    moved: list[list[str]] = []
    command: click.Command = root
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            levels[-1][1].extend(args[i:])
            break
        name = token.partition("=")[0]
        if name in SHARED_OPTIONS:
            width = 2 if name not in SHARED_FLAGS and "=" not in token and i + 1 < len(args) else 1
            moved.append(list(args[i:i + width]))
            i += width
            continue
        option = _option(command, token) if token.startswith("-") else None
        width = 2 if _takes_value(option, token) and i + 1 < len(args) else 1
        if token.startswith("-") or not isinstance(command, click.Group):
            levels[-1][1].extend(args[i:i + width])
        else:
            sub = command.get_command(click.Context(command), token)
            levels[-1][1].append(token)
            if sub is None:                  # not a command: click reports it
                levels[-1][1].extend(args[i + 1:])
                break
            command = sub
            levels.append((sub, []))
        i += width
    front: list[list[str]] = [[] for _ in levels]
    for tokens in moved:
        home = next((k for k in range(len(levels) - 1, -1, -1) if _option(levels[k][0], tokens[0]) is not None), None)
        if home is None:                     # declared nowhere on the path: leave it on the last command
            home = len(levels) - 1
        front[home].extend(tokens)
    out: list[str] = []
    for k, (_command, tokens) in enumerate(levels):
        out.extend(front[k] + tokens)        # level k - 1's tokens end with level k's command name
    return out

def adopt_shared_options(command: click.Command, envvar_prefix: str) -> None:
    """Give `command`'s shared options their environment variables and --timeout its duration type."""
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        shared = next((SHARED_OPTIONS[o] for o in param.opts if o in SHARED_OPTIONS), None)
        if shared is None or param.name is None:
            continue
        own = f"{envvar_prefix}_{param.name.upper()}"
        param.envvar = [own, shared] if param.envvar is None else [*_as_list(param.envvar), shared]
        param.show_envvar = True
        if "--timeout" in param.opts:
            param.type = Duration()


def _as_list(envvar: Any) -> list[str]:
    return [envvar] if isinstance(envvar, str) else list(envvar)


class ClusterUnreachable(click.ClickException):
    """A command's failure because no member was reachable or no leader was found: exit status 3."""

    exit_code = EXIT_UNREACHABLE


class SharedOptionsGroup(click.Group):
    """A click group whose commands (and subgroups) take the shared options anywhere; see the module doc."""

    group_class = type                       # subgroups are SharedOptionsGroup too
    envvar_prefix = "RAFTLOG"

    def add_command(self, cmd: click.Command, name: Optional[str] = None) -> None:
        super().add_command(cmd, name)
        prefix = f"{self.envvar_prefix}_{(name or cmd.name or '').upper().replace('-', '_')}"
        if isinstance(cmd, SharedOptionsGroup):
            cmd.envvar_prefix = prefix
        adopt_shared_options(cmd, prefix)

    def main(self, args: Optional[Sequence[str]] = None, *posargs: Any, **kwargs: Any) -> Any:
        import sys
        given = list(sys.argv[1:] if args is None else args)
        return super().main(hoist_shared_options(self, given), *posargs, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if exc.exit_code == EXIT_FAILED and isinstance(exc.__context__, (Unreachable, NoLeader)):
                raise ClusterUnreachable(exc.message) from exc.__context__
            raise
