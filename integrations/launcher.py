"""The one launcher of the framework commands (``neft-llamafactory``, ``neft-swift``): usage, ``--version``,
``-h/--help``, dispatch, our errors, torchrun.

An adapter's ``cli.py`` keeps only what is its framework's: its commands (one handler each, taking the rest of
the command line and returning an exit status) and when and how its framework starts torchrun. Every command
gets the same:

- the usage text, from the commands' synopsis lines and the core's declaration of the keys
  (:func:`neft_plugins.keys.usage_lines`);
- ``version`` / ``--version``: neft-plugins' version, the framework's installed version and the tested ones
  (``neft_plugins.versions.TESTED``);
- a :class:`~neft_plugins.errors.NEFTuneError` from any command printed as ``<prog>: error: <message>``, exit
  status 2 (a bad key stops a run before any model loads, with no traceback);
- :func:`is_torchrun_worker` and :meth:`Launcher.relaunch`: the command run again on every rank.

Imports no framework.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from neft_plugins.keys import usage_lines

# A command: the rest of the command line in, the exit status out.
Handler = Callable[[list[str]], int]
HELP = ("help", "-h", "--help")
VERSION = ("version", "--version")
ERROR_STATUS = 2  # our errors and a wrong command line, as argparse exits on a usage error


def is_torchrun_worker(environ: Mapping[str, str] | None = None) -> bool:
    """This process is one of the ranks torchrun started (it sets ``LOCAL_RANK`` and ``WORLD_SIZE``): it trains,
    and starts no torchrun of its own."""
    environ = os.environ if environ is None else environ
    return "LOCAL_RANK" in environ and "WORLD_SIZE" in environ


def error_status(prog: str, error: BaseException) -> int:
    """``<prog>: error: <message>`` on stderr; the exit status of our errors."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return ERROR_STATUS


@dataclass(frozen=True)
class Launcher:
    """One framework's command: ``Launcher(...).main(argv)`` is its console script's ``main``."""

    prog: str  # "neft-swift"
    framework: str  # its distribution name, for the version: "ms-swift"
    module: str  # what ``python -m`` runs as ``prog`` on each torchrun rank
    commands: Mapping[str, Handler]
    synopsis: Sequence[tuple[str, str]]  # (arguments after prog, what it does), one usage line each
    keys_how: str  # how the keys are given: "--key value; NEFTUNE_KEY=value for `swift sft` itself"
    others: str  # the framework's own command, for every command not ours: "swift"

    def usage(self) -> str:
        lines = [*self.synopsis, ("version", f"versions of neft-plugins and {self.framework}")]
        width = max(len(f"{self.prog} {arguments}") for arguments, _ in lines)
        return "\n".join(
            [
                "usage:",
                *(f"  {f'{self.prog} {arguments}':<{width}}  {what}" for arguments, what in lines),
                "",
                f"NEFTune keys ({self.keys_how}; `neft keys` explains each):",
                *usage_lines(),
                f"Other commands: use {self.others}.",
                "",
            ]
        )

    def version(self) -> str:
        import neft_plugins
        from neft_plugins.versions import TESTED, installed_version

        installed = installed_version(self.framework) or "not installed"
        return (
            f"neft-plugins {neft_plugins.__version__}\n"
            f"{self.framework} {installed} (tested: {', '.join(TESTED[self.framework])})"
        )

    def usage_error(self, message: str) -> int:
        """A wrong command line: the message, then the usage, on stderr."""
        print(f"{message}\n\n{self.usage()}", file=sys.stderr)
        return ERROR_STATUS

    def main(self, argv: Sequence[str] | None = None) -> int:
        from neft_plugins.errors import NEFTuneError

        argv = list(sys.argv[1:] if argv is None else argv)
        command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
        if command in HELP:
            print(self.usage())
            return 0
        if command in VERSION:
            print(self.version())
            return 0
        if command not in self.commands:
            return self.usage_error(f"{self.prog}: unknown command {command!r}")
        try:
            return self.commands[command](rest)
        except NEFTuneError as error:  # a bad key, before the framework loads a model; a missing hook point
            return error_status(self.prog, error)

    def relaunch(self, torchrun: Sequence[str], command: str, argv: Sequence[str], *, echo: str = "") -> int:
        """``command argv`` of this CLI on every rank: ``torchrun`` is the launcher and its options, as the
        framework's own CLI starts it; ``echo`` (``"run sh: `{}`"``), where the framework shows the command."""
        started = [*torchrun, "-m", self.module, command, *argv]
        if echo:
            print(echo.format(" ".join(started)), flush=True)
        return subprocess.run(started, check=False).returncode
