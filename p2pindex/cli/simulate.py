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
    if not result.passed:
        print()
        print(result.report)
        return EXIT_ERROR
    return EXIT_OK


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
    from p2pindex.sim.outputs import default_output
    from p2pindex.sim.plan import plan_run
    from p2pindex.sim.runner import run_simulation

    _collect_garbage_rarely()

    plan = plan_run(job.scenario, job.seed)
    output = default_output(job.output, job.scenario.name, job.seed)
    return run_simulation(
        plan, output=output, replay_command=job.replay, write_passing=job.keep_passing
    )


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
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        pending = [(job, False) for job in jobs] + [(job, True) for job in twice]
        outcomes = pool.imap(_batch_worker, [job for job, _ in pending])
        for (job, repeat), result in zip(pending, outcomes, strict=True):
            if repeat:
                repeats[job.seed] = result
                continue
            results[job.seed] = result
            if args.format == "json":
                print(json.dumps(result_document(result)), flush=True)
            else:
                print(_batch_line(result), flush=True)
    wall = time.perf_counter() - started
    if args.format == "json":
        different = [s for s, again in repeats.items() if again.trace_hash != results[s].trace_hash]
        failed = any(not r.passed for r in results.values())
        return EXIT_ERROR if failed or different else EXIT_OK
    return _batch_summary(results, repeats, wall)


def _batch_line(result: Any) -> str:
    status = "pass" if result.passed else f"FAIL {len(result.violations)}"
    return (
        f"  seed {result.seed:>6}  {status:8} {result.ops:>6} ops {result.faults:>3} faults "
        f"{len(result.fault_kinds):>2} kinds  {result.virtual_seconds:7.1f} vs "
        f"{result.wall_seconds:6.2f} s {result.cpu_seconds:6.2f} cpu  {result.trace_hash}"
    )


def _batch_summary(results: dict[int, Any], repeats: dict[int, Any], wall: float) -> int:
    failed = [r for r in results.values() if not r.passed]
    nondeterministic = [
        seed for seed, again in repeats.items() if again.trace_hash != results[seed].trace_hash
    ]
    values = list(results.values())
    print()
    rows = [
        ("seeds", str(len(values))),
        ("passed", str(len(values) - len(failed))),
        ("failed", str(len(failed))),
        (
            "operations per seed",
            f"min {min(r.ops for r in values)}, max {max(r.ops for r in values)}",
        ),
        (
            "faults per seed",
            f"min {min(r.faults for r in values)}, max {max(r.faults for r in values)}",
        ),
        ("fault kinds per seed", f"min {min(len(r.fault_kinds) for r in values)}"),
        ("determinism", f"{len(repeats)} seeds run twice, {len(nondeterministic)} differed"),
        ("wall time", f"{wall:.1f} s (longest seed {max(r.wall_seconds for r in values):.1f} s)"),
        (
            "CPU time",
            f"{sum(r.cpu_seconds for r in values):.1f} s in the workers "
            f"({sum(r.cpu_seconds for r in values) / len(values):.1f} s per seed)",
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
    return EXIT_ERROR if failed or nondeterministic else EXIT_OK


def _run_membership(scenario: Any, seeds: Sequence[int], args: argparse.Namespace) -> int:
    from p2pindex.sim.membership_run import run_membership
    from p2pindex.sim.plan import plan_membership

    status = EXIT_OK
    for seed in seeds:
        if args.format == "json":
            result = run_membership(plan_membership(scenario, seed), output=args.output)
            print(json.dumps(result_document(result)), flush=True)
            status = status if result.passed else EXIT_ERROR
            continue
        print(f"simulating {scenario.name} (membership only) with seed {seed}", flush=True)
        result = run_membership(plan_membership(scenario, seed), output=args.output)
        print(result.table())
        print(f"trace hash: {result.trace_hash}")
        if not result.passed:
            print(result.report)
            status = EXIT_ERROR
    return status
