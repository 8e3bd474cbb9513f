"""Command line: argument parsing only; the work is done by emu.machine."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn

from emu import __version__
from emu.config import MemoryManagerFlags, RunConfig, parse_size
from emu.errors import EmuError

EXIT_EMULATOR_ERROR = 125


def _nonnegative(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except EmuError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and emu's error status (125)."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: message` and exit 125."""
        self.exit(EXIT_EMULATOR_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _mm_flags(text: str) -> MemoryManagerFlags:
    try:
        return MemoryManagerFlags.parse(text)
    except EmuError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The `emu` argument parser."""
    parser = _Parser(
        prog="emu", description="Run static Linux x86-64/AArch64 programs on an emulated "
        "machine whose MMU faults are handled QNX-style.")
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a program",
                         description="Run a static ELF program. Its exit status becomes emu's "
                         "(128+N if signal N killed it); emu's own errors exit 125.")
    run.add_argument("--arch", choices=("auto", "x86_64", "aarch64"), default="auto",
                     help="expected architecture (default: from the ELF header)")
    run.add_argument("--ram", type=_size, default="256M", metavar="SIZE",
                     help="physical RAM, e.g. 64M or 1G (default 256M)")
    run.add_argument("--root", default=".", metavar="DIR",
                     help="host directory that is the guest's / (default: current directory)")
    run.add_argument("--uid", type=_nonnegative, default=0, metavar="N",
                     help="user and group id of the guest (default 0, root)")
    run.add_argument("--stats", metavar="FILE", help="write run statistics as JSON to FILE")
    run.add_argument("--events", metavar="FILE",
                     help="write every kernel event (state changes, faults, pulses, switches) "
                     "as JSON lines to FILE")
    run.add_argument("--strace", action="store_true",
                     help="show every system call, its decoded arguments and result on stderr")
    run.add_argument("--profile", metavar="FILE",
                     help="machine profile (TOML) with the cycle cost of every event "
                     "(default: emu/profiles/default.toml)")
    run.add_argument("-m", dest="mm_flags", type=_mm_flags, default=MemoryManagerFlags(),
                     metavar="FLAGS",
                     help="procnto memory-manager flags: l locks every process (mlockall), "
                     "L superlocks every process (everything set up at once: no faults, the "
                     "pre-6.3.2 behaviour), v variable page sizes: committed memory coalesces "
                     "into large pages (default on; ~v turns it off)")
    run.add_argument("--mm-threads", type=_nonnegative, default=1, metavar="N",
                     help="procnto memory-manager server threads (default 1)")
    run.add_argument("--stop-on-every-fault", action="store_true",
                     help="always stop the CPU for a fault, even when the kernel could complete "
                     "it in place with the same outcome (slower; for checking the fast variant)")
    run.add_argument("--max-instructions", type=_nonnegative, default=0, metavar="N",
                     help="stop the guest (SIGXCPU) once exactly N instructions have retired "
                     "(default: no limit)")
    run.add_argument("-E", "--env", action="append", default=[], metavar="NAME=VALUE",
                     help="set a guest environment variable (repeatable)")
    env = run.add_mutually_exclusive_group()
    env.add_argument("--inherit-env", action="store_true",
                     help="give the guest emu's own environment (default: an empty one, so "
                     "that results do not depend on the caller's environment)")
    env.add_argument("--clean-env", action="store_true",
                     help="an empty guest environment (the default; kept for scripts)")
    run.add_argument("--seed", type=_nonnegative, default=0, metavar="N",
                     help="seed of the guest's randomness: AT_RANDOM and getrandom (default 0)")
    run.add_argument("program", metavar="PROGRAM")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    return parser


def _guest_env(args: argparse.Namespace, environ: dict[str, str]) -> tuple[str, ...]:
    env = dict(environ) if args.inherit_env else {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise EmuError(f"--env expects NAME=VALUE, got {item!r}")
        env[name] = value
    return tuple(f"{k}={v}" for k, v in env.items())


def config_from(args: argparse.Namespace, environ: dict[str, str]) -> RunConfig:
    """The RunConfig of parsed `emu run` arguments (`environ`: emu's own environment)."""
    return RunConfig(program=args.program, args=tuple(args.args), arch=args.arch,
                     ram_bytes=args.ram, root=args.root, uid=args.uid,
                     max_instructions=args.max_instructions, env=_guest_env(args, environ),
                     profile=args.profile, mm_threads=args.mm_threads,
                     faults_in_place=not args.stop_on_every_fault, mm_flags=args.mm_flags,
                     seed=args.seed)


def _run(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from emu.machine import open_events, run_program

    config = config_from(args, environ)
    if args.stats:
        try:
            open(args.stats, "a").close()
        except OSError as exc:
            raise EmuError(f"cannot write stats file {args.stats}: {exc.strerror}") from None
    with open_events(args.events) as events:
        result = run_program(config, events, sys.stderr if args.strace else None)
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(result.report, f, indent=2)
            f.write("\n")
    return result.exit_code


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point of the `emu` command; returns the exit status (`environ`: emu's own
    environment, which --inherit-env passes on; default os.environ)."""
    args = build_parser().parse_args(argv)
    try:
        sys.stdout.flush()
        return _run(args, dict(os.environ) if environ is None else environ)
    except EmuError as exc:
        print(f"emu: {exc}", file=sys.stderr)
        return EXIT_EMULATOR_ERROR
    except KeyboardInterrupt:
        print("emu: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an emulator bug: one line, traceback only on request
        if os.environ.get("EMU_DEBUG"):
            raise
        print(f"emu: internal error: {type(exc).__name__}: {exc} "
              "(set EMU_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_EMULATOR_ERROR
