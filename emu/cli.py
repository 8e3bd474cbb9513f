"""Command line: argument parsing only; the work is done by emu.machine."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from emu import __version__
from emu.compare import DEFAULT_POLICIES, Policy
from emu.config import MemoryManagerFlags, RunConfig, parse_size
from emu.errors import EmuError
from emu.inject.plan import Plan, parse_faults
from emu.inject.spec import FaultSpec
from emu.mm.prefault import PrefaultPolicy

EXIT_EMULATOR_ERROR = 125
FIRMWARE_BUILD = Path(__file__).resolve().parents[1] / "firmware" / "build"


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


class _OptionsError(Exception):
    """A policy's options did not parse (the message says why)."""


class _PolicyParser(_Parser):
    """The `emu run` parser as `emu compare` uses it on each policy's options."""

    def error(self, message: str) -> NoReturn:
        """Raise the message instead of exiting."""
        raise _OptionsError(message)


def _prefault(text: str) -> PrefaultPolicy:
    try:
        return PrefaultPolicy.parse(text)
    except EmuError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _priority(text: str) -> int:
    value = _nonnegative(text)
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"a priority is 1-255, not {value}")
    return value


def build_parser(parser_class: type[_Parser] = _Parser) -> argparse.ArgumentParser:
    """The `emu` argument parser."""
    parser = parser_class(
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
    run.add_argument("--profile", metavar="NAME|FILE",
                     help="machine profile: a bundled one by name (`emu profiles` lists them: "
                     "cortex-a53, cortex-a72, cortex-a76, skylake, zen2, default) or a TOML file "
                     "(default: default)")
    run.add_argument("--set", dest="profile_overrides", action="append", default=[],
                     metavar="KEY=VALUE",
                     help="override one profile key, e.g. --set tlb.l2.hit_cycles=9 or "
                     "--set walk.level_cycles=[20,20,20,20] (repeatable)")
    run.add_argument("-m", dest="mm_flags", type=_mm_flags, default=MemoryManagerFlags(),
                     metavar="FLAGS",
                     help="procnto memory-manager flags: l locks every process (mlockall), "
                     "L superlocks every process (everything set up at once: no faults, the "
                     "pre-6.3.2 behaviour), v variable page sizes: committed memory coalesces "
                     "into large pages (default on; ~v turns it off)")
    run.add_argument("--mm-threads", type=_nonnegative, default=1, metavar="N",
                     help="procnto memory-manager server threads (default 1)")
    run.add_argument("--mm-priority", type=_priority, default=None, metavar="PRIO",
                     help="serve faults at this fixed priority (1-255) instead of inheriting "
                     "each fault pulse's priority, QNX's default")
    run.add_argument("--device-driver", type=_priority, default=None, metavar="PRIO",
                     help="run the block device's driver as a thread at PRIO: a page-in "
                     "completes only once that thread has run (default: no driver thread, "
                     "a completion wakes the waiter at once)")
    run.add_argument("--prefault", type=_prefault, default=PrefaultPolicy(), metavar="KIND=N,...",
                     help="pages set up around each fault served, per kind of mapping: text, "
                     "data, heap, stack, anon, shared, or all (e.g. anon=15,heap=7; default 0: "
                     "pure demand paging)")
    run.add_argument("--tlb", choices=("fast", "detailed"), default="fast",
                     help="TLB model: fast (Unicorn's TLB absorbs hits, each refill is charged "
                     "its page walk; default) or detailed (every access goes through the "
                     "profile's L1/L2 TLBs and page-walk cache)")
    run.add_argument("--stop-on-every-fault", action="store_true",
                     help="always stop the CPU for a fault, even when the kernel could complete "
                     "it in place with the same outcome (slower; for checking the fast variant)")
    run.add_argument("--max-instructions", type=_nonnegative, default=0, metavar="N",
                     help="stop the guest (SIGXCPU) once exactly N instructions have retired "
                     "(default: no limit)")
    run.add_argument("--max-cycles", type=_nonnegative, default=0, metavar="N",
                     help="stop the guest (SIGXCPU) once the simulated clock reaches N cycles "
                     "(default: no limit)")
    run.add_argument("--fault", dest="faults", action="append", default=[],
                     metavar="KIND[@TRIGGER][:KEY=VALUE,...]",
                     help="inject a fault (repeatable), e.g. frame-alloc@nth=100, "
                     "read-error@nth=1:file=/data.bin, bitflip@cycle=5000000:reg=x0,bit=3, "
                     "skip@pc=0x401136:count=1 (docs/INJECTION.md lists every kind and key)")
    run.add_argument("--inject", metavar="PLAN.toml",
                     help="inject the faults of a plan file ([[fault]] tables), before any "
                     "--fault")
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

    compare = sub.add_parser(
        "compare", help="run one program under several paging policies, side by side",
        description="Run PROGRAM under each --policy (a name and `emu run` options) in "
        "parallel and print one table: cycles, instructions, deferred faults, cycles in "
        "WAITPAGE, fault latency, TLB misses, walk cycles, frames. Without --policy: "
        + ", ".join(f"{n}={o!r}" for n, o in DEFAULT_POLICIES) + ".")
    compare.add_argument("--policy", action="append", default=[], metavar="NAME=OPTIONS",
                         help="a policy: emu run options, e.g. locked=-ml or "
                         "a53='--profile cortex-a53 --tlb detailed' (repeatable)")
    compare.add_argument("--options", default="", metavar="OPTIONS",
                         help="emu run options for every policy, before its own "
                         "(e.g. '--root DIR --ram 64M')")
    compare.add_argument("--jobs", type=_nonnegative, default=0, metavar="N",
                         help="parallel runs (default: the number of cores)")
    compare.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    compare.add_argument("--json", metavar="FILE", help="write every run's report as JSON")
    compare.add_argument("--plot", metavar="FILE", help="write bar charts (.png or .svg)")
    compare.add_argument("program", metavar="PROGRAM")
    compare.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")

    campaign = sub.add_parser(
        "campaign", help="fault-injection campaigns: run, status, report",
        description="Run programs x fault sweeps x policies (a TOML campaign file), golden "
        "runs first, each experiment's outcome a row of a SQLite database; resumable.")
    csub = campaign.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")
    crun = csub.add_parser("run", help="run (or resume) a campaign")
    crun.add_argument("campaign_file", metavar="CAMPAIGN.toml")
    crun.add_argument("--db", metavar="FILE",
                      help="results database (default: beside the campaign file, named after it: "
                      "campaign.db for campaign.toml)")
    crun.add_argument("--workers", type=_nonnegative, default=0, metavar="N",
                      help="local worker processes (default: the number of cores)")
    crun.add_argument("--dask", metavar="ADDRESS",
                      help="run the experiments on this Dask scheduler instead "
                      "(pip install 'emu[dask]')")
    ff = crun.add_mutually_exclusive_group()
    ff.add_argument("--no-fast-forward", dest="fast_forward", action="store_false", default=None,
                    help="run every experiment from the start (default: the campaign's "
                    "fast_forward setting, on)")
    ff.add_argument("--fast-forward", dest="fast_forward", action="store_true",
                    help="fork each experiment from a run already at its trigger")
    crun.add_argument("--group", type=_nonnegative, default=0, metavar="N",
                      help="experiments per task (default: chosen from the count)")
    cstatus = csub.add_parser("status", help="totals and outcomes of a campaign database")
    cstatus.add_argument("--db", required=True, metavar="FILE")
    cstatus.add_argument("--json", action="store_true", help="print JSON")
    creport = csub.add_parser("report", help="write a markdown report and plots")
    creport.add_argument("--db", required=True, metavar="FILE")
    creport.add_argument("-o", "--out", required=True, metavar="DIR")

    profiles = sub.add_parser("profiles", help="list the bundled machine profiles",
                              description="List the bundled machine profiles, one line each; "
                              "with --show, every key of one profile and its source.")
    profiles.add_argument("--show", metavar="NAME|FILE", help="print one profile's keys")

    demo = sub.add_parser(
        "demo", help="the flagship experiment: plots and a report of the seed's story",
        description="Run the flagship experiment on the firmware programs: fault latency "
        "against same-priority threads (demand, -ml, -mL, procnto at a fixed priority), time "
        "in WAITPAGE per thread, the large-page effect in the detailed TLB model on two "
        "profiles, and the prefault heuristic's trade-off. Writes PNG plots and REPORT.md.")
    demo.add_argument("--out", default="emu-demo", metavar="DIR",
                      help="output folder (default: ./emu-demo)")
    demo.add_argument("--arch", choices=("both", "x86_64", "aarch64"), default="both")
    demo.add_argument("--jobs", type=_nonnegative, default=0, metavar="N",
                      help="parallel runs (default: the number of cores)")
    demo.add_argument("--firmware", default=str(FIRMWARE_BUILD), metavar="DIR",
                      help=f"built firmware programs (default: {FIRMWARE_BUILD})")
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
                     seed=args.seed, tlb=args.tlb, prefault=args.prefault,
                     mm_priority=args.mm_priority, device_driver=args.device_driver,
                     profile_overrides=tuple(args.profile_overrides),
                     max_cycles=args.max_cycles, faults=_faults(args))


def _faults(args: argparse.Namespace) -> tuple[FaultSpec, ...]:
    """The faults of --inject's plan, then of each --fault."""
    planned = Plan.load(args.inject).faults if args.inject else ()
    return planned + parse_faults(args.faults)


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


def parse_run_options(argv: list[str]) -> argparse.Namespace:
    """`emu run ARGV` parsed; EmuError (not an exit) if it does not parse."""
    try:
        return build_parser(_PolicyParser).parse_args(["run", *argv])
    except _OptionsError as exc:
        raise EmuError(f"emu run options {' '.join(argv[:-1])!r}: {exc}") from None


def policy_config(policy: Policy, common: list[str], program: str, args: list[str],
                  environ: dict[str, str]) -> RunConfig:
    """The RunConfig of one `emu compare` policy: `emu run` with the common options, the
    policy's, then the program; EmuError naming the policy if they do not parse."""
    try:
        parsed = build_parser(_PolicyParser).parse_args(
            ["run", *common, *policy.options, program, *args])
    except _OptionsError as exc:
        raise EmuError(f"policy {policy.name}: {exc}") from None
    if parsed.stats or parsed.events or parsed.strace:
        raise EmuError(f"policy {policy.name}: --stats, --events and --strace are per run; "
                       "use --json")
    return config_from(parsed, environ)


def _compare(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from emu import compare as cmp

    policies = [cmp.Policy.parse(text) for text in args.policy] or [
        cmp.Policy(name, tuple(options.split())) for name, options in cmp.DEFAULT_POLICIES]
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise EmuError("--policy names must differ")
    try:
        common = shlex.split(args.options)
    except ValueError as exc:
        raise EmuError(f"--options: {exc}") from None
    for path in (args.csv, args.json, args.plot):
        if path:
            try:
                open(path, "a").close()
            except OSError as exc:
                raise EmuError(f"cannot write {path}: {exc.strerror}") from None
    if args.plot and not args.plot.endswith((".png", ".svg")):
        raise EmuError("--plot must name a .png or .svg file")
    configs = [(p, policy_config(p, common, args.program, args.args, environ)) for p in policies]
    jobs = args.jobs or os.cpu_count() or 1
    advance, close = cmp.progress_bar(len(configs))
    try:
        results = cmp.compare(configs, min(jobs, len(configs)), advance)
    finally:
        close()
    print(cmp.table_text(results, args.program), end="")
    if args.csv:
        cmp.write_csv(results, args.csv)
    if args.json:
        cmp.write_json(results, args.json)
    if args.plot:
        cmp.write_plot(results, args.plot, args.program)
    return 0 if all(r.error is None for r in results) else EXIT_EMULATOR_ERROR


def _campaign(args: argparse.Namespace) -> int:
    from emu.campaign import commands

    if args.campaign_command == "run":
        summary = commands.run(args.campaign_file, args.db, args.workers, args.dask,
                               args.fast_forward, args.group)
        return EXIT_EMULATOR_ERROR if summary.outcomes.get("emulator_error") else 0
    if args.campaign_command == "status":
        print(commands.show_status(args.db, args.json), end="")
        return 0
    path = commands.report(args.db, args.out)
    print(f"emu campaign report: {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from emu.demo import ARCHES, run_demo

    arches = ARCHES if args.arch == "both" else (args.arch,)
    run_demo(Path(args.firmware), Path(args.out), arches, args.jobs or os.cpu_count() or 1)
    return 0


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point of the `emu` command; returns the exit status (`environ`: emu's own
    environment, which --inherit-env passes on; default os.environ)."""
    args = build_parser().parse_args(argv)
    try:
        sys.stdout.flush()
        env = dict(os.environ) if environ is None else environ
        if args.command == "compare":
            return _compare(args, env)
        if args.command == "demo":
            return _demo(args)
        if args.command == "campaign":
            return _campaign(args)
        if args.command == "profiles":
            from emu.profile_cli import list_profiles, show_profile
            print(show_profile(args.show) if args.show else list_profiles(), end="")
            return 0
        return _run(args, env)
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
