"""The CLI as scripts use it: shared options before or after the subcommand, RAFTLOG_* variables,
durations with units, fail-fast exit status 3, --json, and help examples printed verbatim."""
from __future__ import annotations

import inspect
import json

import click
import pytest
from click.testing import CliRunner

from raftlog.cli import main
from raftlog.cli_shared import SHARED_OPTIONS, hoist_shared_options
from raftlog.runtime.launcher import free_ports


def run(*args: str, env: dict | None = None, input: str | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input)


def nobody() -> str:
    """A loopback address where nothing listens."""
    return f"127.0.0.1:{free_ports(1)[0]}"


def commands(group: click.Group = main, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from commands(command, path + (name,))


@pytest.mark.parametrize("args", [
    ("members", "remove", "1", "--peers", "{addr}"),
    ("members", "--peers", "{addr}", "remove", "1"),
    ("--peers", "{addr}", "members", "remove", "1"),
    ("--peers", "{addr}", "append", "x"),
    ("append", "x", "--peers", "{addr}"),
    ("--timeout", "30s", "read", "--peers", "{addr}"),
    ("transfer", "--to", "2", "--peers={addr}"),
])
def test_shared_options_work_before_or_after_the_subcommand_and_nothing_listening_fails_fast(args):
    addr = nobody()
    out = run(*(a.format(addr=addr) for a in args))
    assert out.exit_code == 3, out.output
    assert f"no member reachable: {addr} refused the connection" in out.output


def test_raftlog_peers_and_friends_are_read_and_the_command_line_wins():
    env_addr, cli_addr = nobody(), nobody()
    out = run("append", "x", env={"RAFTLOG_PEERS": env_addr, "RAFTLOG_TIMEOUT": "1s"})
    assert out.exit_code == 3 and env_addr in out.output, out.output
    out = run("append", "x", "--peers", cli_addr, env={"RAFTLOG_PEERS": env_addr})
    assert out.exit_code == 3 and cli_addr in out.output and env_addr not in out.output, out.output
    # After the subcommand beats before it.
    out = run("--peers", env_addr, "append", "x", "--peers", cli_addr)
    assert cli_addr in out.output and env_addr not in out.output, out.output
    # The old per-command variable still works.
    out = run("append", "x", env={"RAFTLOG_APPEND_PEERS": cli_addr})
    assert out.exit_code == 3 and cli_addr in out.output, out.output


def test_every_shared_option_names_its_variable_in_help():
    for path, command in commands():
        text = run(*path, "--help").output
        for option in command.params:
            for opt in getattr(option, "opts", []):
                if opt in SHARED_OPTIONS:
                    assert SHARED_OPTIONS[opt] in text, (path, opt)


def test_the_unresolvable_address_is_named():
    out = run("append", "x", "--peers", "no-such-host.invalid:7001")
    assert out.exit_code == 3, out.output
    assert "no-such-host.invalid:7001 did not resolve" in out.output


@pytest.mark.parametrize("value, ok", [("10", True), ("2.5", True), ("500ms", True), ("1m", True), ("ten", False)])
def test_timeouts_take_units_and_plain_seconds(value, ok):
    out = run("read", "--peers", nobody(), "--timeout", value)
    assert out.exit_code == (3 if ok else 2), out.output


def test_bench_duration_takes_units():
    out = run("bench", "--duration", "soon")
    assert out.exit_code == 2 and "duration such as" in out.output, out.output


@pytest.mark.parametrize("command", ["cluster", "bench", "sim"])
def test_cluster_sizes_take_nodes_and_n(command):
    for flag in ("-n", "--nodes"):
        out = run(command, flag, "0")
        assert out.exit_code == 2 and "0 is not in the range" in out.output, out.output


def test_shell_completion_completes_commands_and_choices():
    def complete(words: str, cword: int) -> str:
        env = {"_RAFTLOG_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        return CliRunner().invoke(main, [], env=env, prog_name="raftlog").output
    assert "plain,members" in complete("raftlog mem", 1)
    assert "plain,lease" in complete("raftlog read --consistency ", 3)


def test_append_json_and_stdin_summary_on_failure():
    out = run("append", "--peers", nobody(), "--json", input="a\nb\n")
    assert out.exit_code == 3, out.output
    assert "0 lines committed" in out.output


def test_hoisting_keeps_values_order_and_what_follows_a_double_dash():
    assert hoist_shared_options(main, ["members", "remove", "1", "--peers", "x", "--json"]) == \
        ["members", "--peers", "x", "--json", "remove", "1"]
    assert hoist_shared_options(main, ["--timeout", "5", "-v", "read", "--from", "--json", "--timeout=9"]) == \
        ["-v", "read", "--timeout", "5", "--timeout=9", "--from", "--json"]
    assert hoist_shared_options(main, ["append", "--", "--json"]) == ["append", "--", "--json"]


def test_a_shared_option_the_command_does_not_take_is_a_usage_error():
    out = run("--peers", "x", "sim")
    assert out.exit_code == 2 and "No such option '--peers'" in out.output, out.output


def test_help_examples_are_printed_verbatim():
    for path, command in [((), main), *commands()]:
        doc = inspect.getdoc(command.callback) or ""
        examples = [line.strip() for line in doc.splitlines() if line.strip().startswith("raftlog ")]
        text = run(*path, "--help").output
        for example in examples:
            assert any(line.strip() == example for line in text.splitlines()), (path, example)


def test_help_documents_exit_codes_and_completion():
    text = run("--help").output
    for needle in ("0 ok", "2 bad usage", "3 no member reachable", "_RAFTLOG_COMPLETE=bash_source", "RAFTLOG_PEERS"):
        assert needle in text


def test_status_json_is_a_list_even_before_the_subcommand():
    out = run("--json", "status", "--peers", nobody(), "--timeout", "200ms")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["role"] == "unreachable"


def test_inspect_takes_limit_like_read():
    from test_cli_runtime import make_dir
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        path = root + "/d"
        make_dir(path)
        dump = json.loads(run("inspect", path, "--json", "--from", "2", "--limit", "1").output)
        assert [e["index"] for e in dump["entries"]] == [2]


@pytest.mark.parametrize("args, needle", [
    (["--heartbeat", "1s"], "--heartbeat 1000: must be above 0 and below the election timeout (150 ms)"),
    (["--heartbeat", "0.4s", "--election-timeout", "0.3s-600ms"], "below the election timeout (300 ms)"),
    (["--heartbeat", "soon"], "expected a duration"),
])
def test_node_timings_take_units_and_plain_milliseconds(tmp_path, args, needle):
    out = run("node", "--id", "1", "--data", str(tmp_path / "d"), "--peers", "1=127.0.0.1:7001", *args)
    assert out.exit_code == 2 and needle in out.output, out.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("path", [("append",), ("read",), ("status",), ("members",), ("transfer",), ("inspect",),
                                  ("check",), ("repair",), ("bench",)])
def test_every_command_that_prints_data_takes_json(path):
    assert "--json" in run(*path, "--help").output


def test_repair_scan_as_json(tmp_path):
    from test_cli_runtime import make_dir
    make_dir(str(tmp_path / "d"))
    out = run("repair", str(tmp_path / "d"), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"ok": True, "corrupt": [], "repaired": [], "unrepairable": {}}
