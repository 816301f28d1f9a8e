"""The ``alexnet`` command: one entry point, one sub-command per job, one module per command.

Each module here (``train``, ``eval``, ...) holds its command's parser (``add_parser``) and what
it runs (``run``); ``options`` holds what several share. Adding a command: write its module, and
name it in ``COMMANDS``.

Errors a user can fix (``alexnet.errors.UserError``: bad paths, unknown names, malformed
options, a damaged file; and the system's ``OSError``: a full disk, a missing permission)
print one line and exit 2; a diverged run exits 3; anything else, a bare ``ValueError``
included, is a bug and keeps its traceback.
ALEXNET_DEBUG=1 shows the traceback always.

This module imports nothing heavy at its top: ``main`` installs its signal handlers first, so
that Ctrl-C or SIGTERM during the seconds PyTorch takes to import ends in one line too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
import warnings

# The commands in the order ``alexnet --help`` lists them: the module of each, under alexnet.cli.
COMMANDS = ("summary", "train", "prepare", "eval", "export", "figures", "predict", "lr_find",
            "experiment", "lrn_divisor", "cache")  # fmt: skip


class OneLineParser(argparse.ArgumentParser):
    """argparse printed its usage block before the error, so a mistake was not one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from alexnet import __version__

    parser = OneLineParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever and Hinton, 2012): networks, training, tools.",
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"alexnet.cli.{name}").add_parser(sub)
    for p in sub.choices.values():
        p.set_defaults(parser=p)  # main's errors name the command
    return parser


def _said_by_us(exc: BaseException) -> bool:
    """An error meant for the user: ours, the system's, or pathlib's symlink loop, which
    ``Path.resolve`` raises as a RuntimeError (Python 3.11 and 3.12)."""
    return not isinstance(exc, RuntimeError) or str(exc).startswith("Symlink loop from")


def _quiet_disk_failures_in_threads() -> None:
    """TensorBoard's writer thread printed a traceback when the disk filled ("Exception in
    thread Thread-1"). Such a failure is said once, in the command's one line: the writer
    raises it again in the main thread, and the next file written meets the same disk."""
    import threading

    from alexnet.files import disk_failure

    default = threading.excepthook

    def hook(args) -> None:
        if args.exc_value is None or disk_failure(args.exc_value) is None:
            default(args)

    threading.excepthook = hook


def main(argv: list[str] | None = None) -> None:
    from alexnet.processes import RAISED, Stopped, quiet_lost_stops, quiet_peer_gone, raise_stopped

    RAISED.clear()
    quiet_lost_stops()
    quiet_peer_gone()
    on_term = signal.signal(signal.SIGTERM, raise_stopped) or signal.SIG_DFL  # first of all
    started = time.monotonic()  # a time budget counts from here (train --budget)
    command = "alexnet"
    try:
        args = _parse(argv)  # imports the command's modules, and with them PyTorch
        args.started = started
        command = f"alexnet {args.command}"
        _run(args)
        if RAISED:  # raised where Python ignored it: the command ran on to its end
            print(f"{command}: stopped by signal {RAISED[-1]} as it was finishing; its work "
                  "was done and is kept", file=sys.stderr)  # fmt: skip
            sys.exit(128 + RAISED[-1])
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Stopped as exc:  # SIGTERM outside a command's own StopFlag
        print(f"{command}: stopped by signal {exc.signum}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    finally:
        if argv is None:  # the process's own command is over: a signal in the second or so of
            # the interpreter's shutdown would end it with 143 or 130, silently, hiding the
            # command's own status; the work is done, so the signal is let pass
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:  # called from Python (tests): leave the caller's process as it was
            signal.signal(signal.SIGTERM, on_term)
            warnings.formatwarning = _PYTHONS_WARNINGS


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, parsed, with the standard streams made safe to use."""
    from alexnet.files import NAMES

    _quiet_disk_failures_in_threads()
    warnings.formatwarning = _one_line_warning
    if sys.stderr is None:  # `2>&-`: nowhere to say anything, but the command itself can run
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8: as \xNN, always
        with contextlib.suppress(AttributeError, ValueError):  # a stream replaced by a caller
            stream.reconfigure(errors=NAMES)
    from alexnet.processes import deferred_signals

    # Building the parser imports PyTorch, NumPy and the commands (3-4 s). A signal's
    # exception raised inside a C extension's import was swallowed there (the command ran on)
    # or left NumPy half-initialised, to fail later with a traceback far from the signal: the
    # signal waits for the imports, then ends the command in one line.
    with deferred_signals():
        parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser, so that its name is in the message, unless
        words = sys.argv[1:] if argv is None else argv  # it came before the command
        before = words.index(extra[0]) < words.index(args.command)
        (parser if before else args.parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if sys.stdout is None:  # `>&-`: what the command prints would be lost (or a traceback)
        print(f"alexnet {args.command}: error: its standard output is closed; give it one "
              "(> FILE, or > /dev/null to discard it)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    return args


class _NamedOutput:
    """Standard output whose write errors name it: ``alexnet summary > /dev/full`` said only
    "[Errno 28] No space left on device"."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, "standard output") from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, "standard output") from None

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


_PYTHONS_WARNINGS = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line: Python's second line (the source line that warned) is of no use
    to someone running a command."""
    return f"alexnet: warning: {str(message).replace(chr(10), ' ')}\n"


def _run(args: argparse.Namespace) -> None:
    """The command, with what a user can cause said in one line (exit status 2)."""
    from alexnet.cli.options import UserError

    stdout, sys.stdout = sys.stdout, _NamedOutput(sys.stdout)
    try:
        args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside the try, not at exit
    except BrokenPipeError:  # `alexnet summary --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
    except (UserError, OSError, RuntimeError) as exc:  # a bare ValueError is a bug: traceback
        if os.environ.get("ALEXNET_DEBUG") or not _said_by_us(exc):
            raise
        message = str(exc).replace("\n", " ") if not isinstance(exc, OSError) or not exc.filename \
            else f"{os.fsdecode(exc.filename)}: {exc.strerror}"  # TensorBoard's are bytes  # fmt: skip
        if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
            message = (f"{os.fsdecode(exc.filename)}: a file stands where this path needs a "
                       "folder; move or remove it")  # mkdir says only "File exists"  # fmt: skip
        if isinstance(exc, RuntimeError):
            looped = str(exc).removeprefix("Symlink loop from ").strip("'")
            message = f"{looped}: a symbolic link that leads back to itself; point it elsewhere"
        print(f"alexnet {args.command}: error: {message}", file=sys.stderr)
        if isinstance(exc, OSError) and exc.filename == "standard output":
            with contextlib.suppress(OSError, ValueError, AttributeError):  # not again at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        sys.exit(2)
    finally:
        sys.stdout = stdout
