"""The `raftlog` command line: one click group, thin commands over the library."""
from __future__ import annotations

import logging

import click

import raftlog


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "RAFTLOG"})
@click.version_option(raftlog.__version__, prog_name="raftlog",
                      message=f"%(prog)s %(version)s ({raftlog.IMPLEMENTATION} hot path)")
@click.option("-v", "--verbose", count=True, help="More log output (-v INFO, -vv DEBUG).")
def main(verbose: int) -> None:
    """raftlog: a durable replicated log (Raft, Cython hot path, LMDB storage).

    Start a local 3-node cluster and append to it:

        raftlog cluster -n 3 --base-port 7001

        raftlog append --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 hello
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
