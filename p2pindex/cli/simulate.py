"""`p2pindex simulate`: run a scenario on the deterministic simulator, one seed or a batch.

Every problem with the scenario or the options is reported as one ``error:`` line before
anything runs. A run prints its options, a summary table and its trace hash; a failing run
also prints the violations, a shortened history and the exact command that replays it. A
batch (``--seeds N``) spreads the seeds over worker processes and prints one line per seed.

The command re-executes itself with ``PYTHONHASHSEED=0`` when the variable is not set, since
set iteration order (and so the trace) would otherwise differ from one process to the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from p2pindex.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, add_format_option

DEFAULT_SCENARIO: Final = "ci"
DEFAULT_OUTPUT: Final = Path("sim-output")
EPILOG = """\
examples:
  p2pindex simulate partition-heal --seed 7          one run, files in sim-output/partition-heal-7/
  p2pindex simulate --seeds 100                      the CI batch (scenario 'ci') on every core
  p2pindex simulate split-brain --seed 3 --nodes 7 --faults partition,crash --fault-count 30
  p2pindex simulate ci --seed 5 --plant-bug lww      check that the harness catches a planted bug
  p2pindex simulate --list                           the scenarios that come with p2pindex
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run a scenario on the deterministic simulator (faults, checkers, timeline)",
        description=(
            "Run real nodes on a simulated network, clock and disk. The seed decides "
            "everything: the same seed and code give the same trace hash."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenario",
        nargs="?",
        default=DEFAULT_SCENARIO,
        help=(f"a scenario name (see --list) or a .toml/.json path (default {DEFAULT_SCENARIO})"),
    )
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--seed", type=_non_negative, help="run this one seed")
    runs.add_argument(
        "--seeds",
        type=_positive,
        metavar="COUNT",
        help="run COUNT seeds (from --first-seed) as a batch",
    )
    parser.add_argument(
        "--first-seed",
        type=_non_negative,
        default=1,
        metavar="SEED",
        help="first seed of a batch (default 1)",
    )
    parser.add_argument("--nodes", type=_positive, help="cluster size (overrides the scenario)")
    parser.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="virtual seconds of workload and faults",
    )
    parser.add_argument(
        "--faults",
        metavar="KINDS",
        help="generate faults of these comma-separated kinds ('none': no faults)",
    )
    parser.add_argument(
        "--fault-count", type=_non_negative, metavar="N", help="how many faults to generate"
    )
    parser.add_argument(
        "--plant-bug",
        action="append",
        default=[],
        metavar="NAME",
        help="switch on a planted bug in every node (repeatable)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run the nodes without security (no certificates, handshakes or signed "
        "datagrams), to compare speed; by default they run secure",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help=f"where run directories go (default {DEFAULT_OUTPUT}/)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=None,
        help="worker processes for a batch (default: every core)",
    )
    parser.add_argument(
        "--verify-determinism",
        type=_non_negative,
        default=0,
        metavar="K",
        help="run the first K seeds twice and fail if a trace hash differs",
    )
    parser.add_argument(
        "--keep-passing", action="store_true", help="in a batch, write files for passing seeds too"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    add_format_option(parser)
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


PACKAGED_SCENARIOS: Final = Path(__file__).resolve().parents[1] / "sim" / "scenarios"
"""The scenarios installed with the package (package data), so `simulate --list` and
`simulate NAME` work from an installed wheel, not only from a clone."""
LOCAL_SCENARIOS: Final = Path("simulations")
"""A project's own scenario files, in ./simulations, found by name beside the packaged
ones (and before them, so a project can shadow one)."""


def scenario_directories() -> list[Path]:
    """Where scenario names are looked up, first match wins."""
    local = LOCAL_SCENARIOS
    has_own = local.is_dir() and any(path.suffix in (".toml", ".json") for path in local.iterdir())
    return [local, PACKAGED_SCENARIOS] if has_own else [PACKAGED_SCENARIOS]


def scenario_directory(name: str) -> Path:
    """The directory that holds scenario ``name`` (the packaged one when none does)."""
    for directory in scenario_directories():
        if any((directory / f"{name}{suffix}").is_file() for suffix in (".toml", ".json")):
            return directory
    return PACKAGED_SCENARIOS


@dataclass(frozen=True, slots=True)
class _Job:
    """One seed for a batch worker (picklable)."""

    scenario: Any
    seed: int
    output: Path
    keep_passing: bool
    replay: str


TRACEBACK_FILE: Final = "traceback.txt"
"""Written into a seed's run directory (beside a failing seed's files) when its run raised."""


@dataclass(frozen=True, slots=True)
class SeedError:
    """A seed whose run raised instead of finishing, returned by a batch worker in place of
    its result: one broken seed is then reported (and counted as failed) with its replay
    command while the others go on, instead of its traceback ending the whole batch."""

    scenario: str
    seed: int
    error: str
    """``Type: first line of the message`` (see :func:`describe_exception`)."""
    traceback: str
    traceback_file: str | None
    """Where the traceback was written; None when it could not be, so it is printed."""
    replay: str

    def document(self) -> dict[str, Any]:
        """The ``--format json`` line of this seed (``passed`` false, like a failing one)."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "passed": False,
            "error": self.error,
            "traceback_file": self.traceback_file,
            "replay": self.replay,
        }

    def lines(self, *, traceback_printed_above: bool = False) -> list[str]:
        """The seed, its error, where the traceback is and how to replay it; then the
        traceback itself when no file holds it and it was not printed already."""
        printed = self.traceback_file is None and not traceback_printed_above
        where = self.traceback_file or f"(not written, printed {'below' if printed else 'above'})"
        lines = [
            f"seed {self.seed} FAILED: the run raised {self.error}",
            f"  traceback: {where}",
            f"  replay:    {self.replay}",
        ]
        return [*lines, self.traceback.rstrip()] if printed else lines


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message``, looking inside exception groups of one, since
    trio wraps a task's error in a group per nursery and the group's own text says nothing."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        first = describe_exception(exc.exceptions[0])
        return f"{type(exc).__name__} of {len(exc.exceptions)} errors, the first {first}"
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def seed_error(
    scenario: str, seed: int, exc: Exception, directory: Path | None, replay: str
) -> SeedError:
    """Describe a run that raised and write its traceback into ``directory`` (the seed's run
    directory, where a failing seed's files go) so a line can point at it. Called where the
    exception was caught, the only place its traceback exists."""
    error = describe_exception(exc)
    text = f"seed {seed} of {scenario} raised {error}\nreplay: {replay}\n\n" + "".join(
        traceback.format_exception(exc)
    )
    written: str | None = None
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / TRACEBACK_FILE).write_text(text, encoding="utf-8")
            written = str(directory / TRACEBACK_FILE)
        except OSError:
            written = None
    return SeedError(scenario, seed, error, text, written, replay)


def run(args: argparse.Namespace) -> int:
    from p2pindex.sim.determinism import reexec_with_fixed_hash_seed
    from p2pindex.sim.scenario import Engine, ScenarioError

    if args.list:
        return _list(scenario_directories(), as_json=args.format == "json")
    try:
        scenario = _scenario(args, scenario_directory(args.scenario))
        seeds = _seeds(args, scenario)
        for seed in seeds:
            _plan(scenario, seed)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reexec_with_fixed_hash_seed()
    _collect_garbage_rarely()
    if scenario.engine is Engine.SWIM:
        return _run_membership(scenario, seeds, args)
    if args.seeds is None:
        return _run_one(scenario, seeds[0], args)
    return _run_batch(scenario, seeds, args)


def _scenario(args: argparse.Namespace, directory: Path) -> Any:
    from p2pindex.sim.scenario import load_scenario, parse_fault_kinds, scenario_path

    scenario = load_scenario(scenario_path(args.scenario, directory))
    kinds = parse_fault_kinds(args.faults) if args.faults is not None else None
    return scenario.with_overrides(
        nodes=args.nodes,
        duration=args.duration,
        fault_kinds=kinds,
        fault_count=args.fault_count,
        planted_bugs=args.plant_bug,
        insecure=args.insecure,
    )


def _seeds(args: argparse.Namespace, scenario: Any) -> list[int]:
    if args.seeds is not None:
        return list(range(args.first_seed, args.first_seed + args.seeds))
    return [args.seed if args.seed is not None else scenario.seed]


def _plan(scenario: Any, seed: int) -> Any:
    from p2pindex.sim.plan import plan_membership, plan_run
    from p2pindex.sim.scenario import Engine

    if scenario.engine is Engine.SWIM:
        return plan_membership(scenario, seed)
    return plan_run(scenario, seed)


def replay_command(args: argparse.Namespace, seed: int) -> str:
    """The command line that reruns exactly this seed with these options."""
    words = ["p2pindex", "simulate", args.scenario, "--seed", str(seed)]
    if args.nodes is not None:
        words += ["--nodes", str(args.nodes)]
    if args.duration is not None:
        words += ["--duration", f"{args.duration:g}"]
    if args.faults is not None:
        words += ["--faults", args.faults]
    if args.fault_count is not None:
        words += ["--fault-count", str(args.fault_count)]
    for bug in args.plant_bug:
        words += ["--plant-bug", bug]
    if args.insecure:
        words.append("--insecure")
    return shlex.join(words)


def _list(directories: Sequence[Path], *, as_json: bool = False) -> int:
    from p2pindex.sim.scenario import ScenarioError, load_scenario

    found: dict[str, Path] = {}
    for directory in directories:
        for path in sorted([*directory.glob("*.toml"), *directory.glob("*.json")]):
            found.setdefault(path.stem, path)
    if not found:
        where = ", ".join(str(directory) for directory in directories)
        print(f"error: no scenarios in {where}", file=sys.stderr)
        return EXIT_ERROR
    width = max(len(name) for name in found) + 2
    documents = []
    for path in sorted(found.values(), key=lambda p: p.stem):
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            documents.append({"name": path.stem, "path": str(path), "broken": str(exc)})
            if not as_json:
                print(f"  {path.stem:{width}} (broken: {exc})")
            continue
        documents.append(
            {"name": path.stem, "path": str(path), "description": scenario.description}
        )
        if not as_json:
            print(f"  {path.stem:{width}} {scenario.description}")
    if as_json:
        print(json.dumps(documents))
    return EXIT_OK


def result_document(result: Any) -> dict[str, Any]:
    """One seed's result for ``--format json`` (one line per seed in a batch)."""
    return {
        "scenario": result.scenario,
        "seed": result.seed,
        "passed": result.passed,
        "trace_hash": result.trace_hash,
        "faults": result.faults,
        "fault_kinds": dict(result.fault_kinds),
        "operations": getattr(result, "ops", None),
        "violations": [
            {"checker": v.checker, "message": v.message, "keys": list(v.keys)}
            for v in result.violations
        ],
        "virtual_seconds": result.virtual_seconds,
        "wall_seconds": result.wall_seconds,
        "tombstones": dict(getattr(result, "tombstones", None) or {}),
        "output": result.output_dir,
    }


def _run_one(scenario: Any, seed: int, args: argparse.Namespace) -> int:
    from p2pindex.sim.outputs import default_output, format_table
    from p2pindex.sim.plan import plan_run
    from p2pindex.sim.runner import run_simulation

    plan = plan_run(scenario, seed)
    command = replay_command(args, seed)
    say = _narrator(args)
    say(f"simulating {scenario.name} with seed {seed}")
    for name, value in scenario.options().items():
        say(f"  {name} = {value}")
    say(f"  fault schedule: {len(plan.schedule)} faults")
    output = default_output(args.output, scenario.name, seed)
    try:
        result = run_simulation(plan, output=output, replay_command=command)
        if args.format == "json":
            document = result_document(result)
            if args.verify_determinism:
                again = run_simulation(plan, output=None)
                document["deterministic"] = again.trace_hash == result.trace_hash
            print(json.dumps(document))
            return EXIT_OK if result.passed and document.get("deterministic", True) else EXIT_ERROR
        print()
        print(format_table(result.summary_rows()))
        print(f"trace hash: {result.trace_hash}")
        if args.verify_determinism:
            again = run_simulation(plan, output=None)
            if again.trace_hash != result.trace_hash:
                print(
                    f"error: seed {seed} is not deterministic: second run gave {again.trace_hash}",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            print("determinism: a second run gave the same trace hash")
    except Exception as exc:  # reported like a failing run: seed, error, replay
        return _one_raised(seed_error(scenario.name, seed, exc, output, command), args)
    if not result.passed:
        print()
        print(result.report)
        return EXIT_ERROR
    return EXIT_OK


def _one_raised(error: SeedError, args: argparse.Namespace) -> int:
    """A single run that raised: the traceback (one seed, so it is the thing to read), then
    the seed, the error, the traceback file and the replay command last, where they are
    seen; the exit status is that of a failing run, as for a seed of a batch."""
    print(error.traceback.rstrip(), file=sys.stderr)
    if args.format == "json":
        print(json.dumps(error.document()))
    print("error: " + "\n".join(error.lines(traceback_printed_above=True)), file=sys.stderr)
    return EXIT_ERROR


def _narrator(args: argparse.Namespace) -> Any:
    """``print`` for text output; with ``--format json`` stdout carries only results."""
    if args.format == "json":
        return lambda *_args, **_kwargs: None
    return print


def _collect_garbage_rarely() -> None:
    """A simulation allocates millions of short-lived objects (trio tasks, frames, events) and
    keeps a growing history; with the default thresholds the cyclic collector runs hundreds
    of times per seed and rescans that history each time. Rarer young collections save CPU;
    memory stays bounded by the run itself."""
    gc.set_threshold(50_000, 20, 50)


def _batch_worker(job: _Job) -> Any:
    """Run one seed of a batch: its RunResult, or a SeedError when the run raised (caught
    here, in the worker, where the traceback still exists). Only ``Exception`` is caught:
    an interrupt still stops the batch."""
    from p2pindex.sim.outputs import default_output
    from p2pindex.sim.plan import plan_run
    from p2pindex.sim.runner import run_simulation

    _collect_garbage_rarely()

    output = default_output(job.output, job.scenario.name, job.seed)
    try:
        plan = plan_run(job.scenario, job.seed)
        return run_simulation(
            plan, output=output, replay_command=job.replay, write_passing=job.keep_passing
        )
    except Exception as exc:
        return seed_error(job.scenario.name, job.seed, exc, output, job.replay)


def _run_batch(scenario: Any, seeds: Sequence[int], args: argparse.Namespace) -> int:
    jobs = [
        _Job(scenario, seed, args.output, args.keep_passing, replay_command(args, seed))
        for seed in seeds
    ]
    twice = [job for job in jobs[: args.verify_determinism]]
    workers = args.jobs or multiprocessing.cpu_count()
    say = _narrator(args)
    say(
        f"simulating {scenario.name}: {len(jobs)} seeds from {seeds[0]} on {workers} workers"
        + (f", {len(twice)} of them twice" if twice else "")
    )
    for name, value in scenario.options().items():
        say(f"  {name} = {value}")
    started = time.perf_counter()
    results: dict[int, Any] = {}
    repeats: dict[int, Any] = {}
    errors: dict[int, SeedError] = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        pending = [(job, False) for job in jobs] + [(job, True) for job in twice]
        outcomes = pool.imap(_batch_worker, [job for job, _ in pending])
        for (job, repeat), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, SeedError):
                if job.seed not in errors:  # a seed that raised twice is reported once
                    errors[job.seed] = outcome
                    _print_error(outcome, args, repeat=repeat)
                continue
            if repeat:
                repeats[job.seed] = outcome
                continue
            results[job.seed] = outcome
            if args.format == "json":
                print(json.dumps(result_document(outcome)), flush=True)
            else:
                print(_batch_line(outcome), flush=True)
    wall = time.perf_counter() - started
    different = _nondeterministic(results, repeats, errors)
    if args.format == "json":
        failed = errors or any(not r.passed for r in results.values())
        return EXIT_ERROR if failed or different else EXIT_OK
    return _batch_summary(results, repeats, wall, errors, different, twice=len(twice))


def _print_error(error: SeedError, args: argparse.Namespace, *, repeat: bool) -> None:
    """A seed whose run raised, at once, in the batch's format. One line names the seed,
    the error, the traceback file and the replay command; the traceback is printed only
    when it could not be written (once, with the failures after the summary)."""
    if args.format == "json":
        document = error.document() | ({"second_run": True} if repeat else {})
        print(json.dumps(document), flush=True)
        if error.traceback_file is None:
            print(error.traceback, file=sys.stderr, flush=True)
        return
    when = " (on its second run)" if repeat else ""
    where = error.traceback_file or "printed at the end"
    print(
        f"  seed {error.seed:>6}  {'FAIL':8} raised {error.error}{when}; "
        f"traceback: {where}; replay: {error.replay}",
        flush=True,
    )


def _nondeterministic(
    results: dict[int, Any], repeats: dict[int, Any], errors: dict[int, SeedError]
) -> list[int]:
    """Seeds run twice whose trace hashes differ; a seed that raised on either run is
    reported as raised, not as nondeterministic as well."""
    return [
        seed
        for seed, again in repeats.items()
        if seed in results and seed not in errors and again.trace_hash != results[seed].trace_hash
    ]


def _batch_line(result: Any) -> str:
    status = "pass" if result.passed else f"FAIL {len(result.violations)}"
    return (
        f"  seed {result.seed:>6}  {status:8} {result.ops:>6} ops {result.faults:>3} faults "
        f"{len(result.fault_kinds):>2} kinds  {result.virtual_seconds:7.1f} vs "
        f"{result.wall_seconds:6.2f} s {result.cpu_seconds:6.2f} cpu  {result.trace_hash}"
    )


def _batch_summary(
    results: dict[int, Any],
    repeats: dict[int, Any],
    wall: float,
    errors: dict[int, SeedError],
    nondeterministic: list[int],
    *,
    twice: int,
) -> int:
    """The batch's table, then every failure: a seed that raised counts as failed, and the
    statistics cover the runs that finished. ``twice``: seeds run twice, raising or not."""
    failed = [r for r in results.values() if not r.passed]
    values = list(results.values())
    print()
    rows = [
        *_tally_rows(results, errors),
        ("operations per seed", _spread([r.ops for r in values])),
        ("faults per seed", _spread([r.faults for r in values])),
        (
            "fault kinds per seed",
            f"min {min(len(r.fault_kinds) for r in values)}" if values else "none finished",
        ),
        ("determinism", f"{twice} seeds run twice, {len(nondeterministic)} differed"),
        (
            "wall time",
            f"{wall:.1f} s"
            + (f" (longest seed {max(r.wall_seconds for r in values):.1f} s)" if values else ""),
        ),
        (
            "CPU time",
            f"{sum(r.cpu_seconds for r in values):.1f} s in the workers "
            f"({sum(r.cpu_seconds for r in values) / max(len(values), 1):.1f} s per seed)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows))
    for seed in nondeterministic:
        print(
            f"error: seed {seed} is not deterministic: {results[seed].trace_hash} then "
            f"{repeats[seed].trace_hash}",
            file=sys.stderr,
        )
    for result in failed:
        print()
        print(result.report)
    _print_raised(errors)
    return EXIT_ERROR if failed or errors or nondeterministic else EXIT_OK


def _tally_rows(results: dict[int, Any], errors: dict[int, SeedError]) -> list[tuple[str, str]]:
    """The first rows of a batch's summary (either engine): a seed that raised is failed."""
    failing = {seed for seed, result in results.items() if not result.passed} | set(errors)
    seeds = len(set(results) | set(errors))
    raised = f" ({len(errors)} raised an exception)" if errors else ""
    return [
        ("seeds", str(seeds)),
        ("passed", str(seeds - len(failing))),
        ("failed", f"{len(failing)}{raised}"),
    ]


def _print_raised(errors: dict[int, SeedError]) -> None:
    """After a batch's summary: each seed that raised, its traceback file and replay."""
    for error in sorted(errors.values(), key=lambda e: e.seed):
        print()
        print("\n".join(error.lines()))


def _spread(counts: list[int]) -> str:
    return f"min {min(counts)}, max {max(counts)}" if counts else "none finished"


def _run_membership(scenario: Any, seeds: Sequence[int], args: argparse.Namespace) -> int:
    """Run membership-only seeds one after another, in this process (``--jobs`` does not
    apply: a seed of a thousand SWIM cores is one discrete-event loop). A seed whose run
    raises is reported as in a cluster batch (see :class:`SeedError`) and the others go on;
    a batch ends with its tally and every seed that raised."""
    from p2pindex.sim.membership_run import run_membership
    from p2pindex.sim.outputs import default_output, format_table
    from p2pindex.sim.plan import plan_membership

    results: dict[int, Any] = {}
    errors: dict[int, SeedError] = {}
    for seed in seeds:
        if args.format != "json":
            print(f"simulating {scenario.name} (membership only) with seed {seed}", flush=True)
        try:
            result = run_membership(
                plan_membership(scenario, seed),
                output=args.output,
                replay_command=replay_command(args, seed),
            )
        except Exception as exc:  # reported like a failing seed: seed, error, replay
            directory = default_output(args.output, scenario.name, seed)
            error = seed_error(scenario.name, seed, exc, directory, replay_command(args, seed))
            if args.seeds is None:
                return _one_raised(error, args)
            errors[seed] = error
            _print_error(error, args, repeat=False)
            continue
        results[seed] = result
        if args.format == "json":
            print(json.dumps(result_document(result)), flush=True)
            continue
        print(result.table())
        print(f"trace hash: {result.trace_hash}")
        if not result.passed:
            print(result.report)
    failed = errors or any(not r.passed for r in results.values())
    if args.seeds is not None and args.format != "json":
        print()
        print(format_table(_tally_rows(results, errors)))
        _print_raised(errors)
    return EXIT_ERROR if failed else EXIT_OK
