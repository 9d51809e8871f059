"""Soak: many seeds of one scenario on several workers, resumable, failing seeds with replays.

    python simulations/soak.py [SCENARIO] --first-seed 1001 --seeds 2000 [--jobs 2]
                               [--state FILE] [--output DIR] [--plant-bug BUG ...]

The CI batch (``p2pindex simulate --seeds 100``) runs the first hundred seeds of ``ci`` on
every submission; a change to the data path or to membership runs at least a thousand more
of them here before it is called done. Seeds run in worker processes (with the hash seed
fixed, so each seed's trace hash is the one ``p2pindex simulate`` prints on replay).

Every finished seed is appended to the state file (JSON lines; default
``soak-<scenario>-<first seed>.jsonl``) as soon as it ends, so an interrupted soak started
again with the same arguments runs only the seeds still missing. Each failing seed is
printed at once with its violations and the command that replays it; so is a run that
raised instead of finishing. With ``--output DIR`` each failing seed's files (the checker's
history, schedule, summary and timeline, or the traceback of a run that raised) go into its
own ``DIR/<scenario>-<seed>/``, the layout ``p2pindex simulate`` uses, and its report line
names that folder. Exits 1 if any seed in the range failed (including seeds
finished in an earlier, interrupted soak), 0 if all passed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from p2pindex.cli.simulate import PACKAGED_SCENARIOS, seed_error
from p2pindex.sim.determinism import reexec_with_fixed_hash_seed
from p2pindex.sim.outputs import default_output
from p2pindex.sim.plan import plan_run
from p2pindex.sim.runner import run_simulation
from p2pindex.sim.scenario import load_scenario

HERE = Path(__file__).resolve().parent
SHOWN_VIOLATIONS = 3
RUN_ERROR = "[run error]"
"""How a run that raised is recorded in place of its violations."""


@dataclass(frozen=True, slots=True)
class SeedResult:
    """One finished seed, as kept in the state file."""

    seed: int
    passed: bool
    trace_hash: str = ""
    violations: tuple[str, ...] = ()
    """The first few violations, ``[checker] message``; for a crashed run, its error."""
    count: int = 0
    """How many violations the run found (1 for a run that raised)."""
    cpu: float = 0.0
    output: str = ""
    """The folder holding a failing seed's files (``<output>/<scenario>-<seed>``), if any."""


def scenario_path(scenario: str) -> Path:
    """A scenario name (looked up as `p2pindex simulate NAME` does: this directory's own
    files, then the ones packaged with p2pindex) or the path of a scenario file."""
    if scenario.endswith((".toml", ".json")):
        return Path(scenario).resolve()
    for directory in (HERE, PACKAGED_SCENARIOS):
        for suffix in (".toml", ".json"):
            if (directory / f"{scenario}{suffix}").is_file():
                return directory / f"{scenario}{suffix}"
    return PACKAGED_SCENARIOS / f"{scenario}.toml"


def replay(scenario: str, seed: int, bugs: Sequence[str] = ()) -> str:
    planted = "".join(f" --plant-bug {bug}" for bug in bugs)
    return f"p2pindex simulate {scenario} --seed {seed}{planted}"


Job = tuple[str, int, str | None, tuple[str, ...]]
"""(scenario, seed, output directory or None, planted bugs)."""


def run_seed(job: Job) -> SeedResult:
    """Run one seed (in a worker); an error escaping the run is a failure, not a crash."""
    scenario, seed, output, bugs = job
    name = Path(scenario).stem
    try:
        loaded = load_scenario(scenario_path(scenario))
        name = loaded.name
        if bugs:
            loaded = loaded.with_overrides(planted_bugs=list(bugs))
        result = run_simulation(
            plan_run(loaded, seed),
            output=seed_directory(output, name, seed),
            replay_command=replay(scenario, seed, bugs),
            write_passing=False,
        )
    except Exception as exc:  # reported with its replay command like any failure
        directory = seed_directory(output, name, seed)
        error = seed_error(name, seed, exc, directory, replay(scenario, seed, bugs))
        if error.traceback_file is None:  # nowhere to keep it: print it once, from here
            print(error.traceback, file=sys.stderr, flush=True)
        where = f" (traceback in {error.traceback_file})" if error.traceback_file else ""
        folder = str(directory) if error.traceback_file else ""
        return SeedResult(seed, False, "", (f"{RUN_ERROR} {error.error}{where}",), 1, 0.0, folder)
    shown = tuple(f"[{v.checker}] {v.message}" for v in result.violations[:SHOWN_VIOLATIONS])
    return SeedResult(
        seed,
        result.passed,
        result.trace_hash,
        shown,
        len(result.violations),
        result.cpu_seconds,
        result.output_dir or "",
    )


def seed_directory(output: str | None, scenario: str, seed: int) -> Path | None:
    """Where one seed's files go: its own folder under ``--output``, as in a simulate batch,
    so failing seeds sharing an output directory do not overwrite each other's files."""
    return None if output is None else default_output(Path(output), scenario, seed)


def load_state(path: Path, seeds: range) -> dict[int, SeedResult]:
    """Seeds of ``seeds`` finished before (a torn last line from an interruption is skipped)."""
    done: dict[int, SeedResult] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            document = json.loads(line)
            result = SeedResult(
                int(document["seed"]),
                bool(document["passed"]),
                str(document.get("trace_hash", "")),
                tuple(document.get("violations", ())),
                int(document.get("count", 0)),
                float(document.get("cpu", 0.0)),
                str(document.get("output", "")),
            )
        except (ValueError, KeyError, TypeError):
            continue
        if result.seed in seeds:
            done[result.seed] = result
    return done


def describe_failure(scenario: str, result: SeedResult, bugs: Sequence[str]) -> str:
    command = replay(scenario, result.seed, bugs)
    raised = bool(result.violations) and result.violations[0].startswith(RUN_ERROR)
    what = "the run raised" if raised else f"{result.count} violation(s)"
    what += f"; files in {result.output}" if result.output else ""
    lines = [f"seed {result.seed} FAILED ({what}): {command}"]
    lines += [f"    {violation}" for violation in result.violations]
    if result.count > len(result.violations):
        lines.append(f"    ... and {result.count - len(result.violations)} more")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", default="ci", help="scenario name or file")
    parser.add_argument("--first-seed", type=int, default=1001, help="first seed (default 1001)")
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds (default 2000)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--state", type=Path, help="state file of finished seeds (JSON lines)")
    parser.add_argument(
        "--output", help="directory for the files of failing seeds, each in <scenario>-<seed>/"
    )
    parser.add_argument(
        "--plant-bug",
        action="append",
        default=[],
        metavar="BUG",
        help="plant a bug in every node (repeatable): how often does the batch catch it?",
    )
    parser.add_argument(
        "--progress", type=int, default=50, help="print a progress line every N seeds"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or args.first_seed < 0:
        parser.error("--seeds and --jobs must be at least 1 and --first-seed not negative")
    if not scenario_path(args.scenario).is_file():
        parser.error(f"no scenario {args.scenario!r} (looked for {scenario_path(args.scenario)})")
    reexec_with_fixed_hash_seed()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    name = Path(args.scenario).stem
    label = "".join(f"-{bug}" for bug in args.plant_bug)
    state = args.state or Path(f"soak-{name}{label}-{args.first_seed}.jsonl")
    done = load_state(state, seeds)
    todo = [seed for seed in seeds if seed not in done]
    print(
        f"soak {args.scenario}: seeds {seeds.start}..{seeds.stop - 1}, {len(done)} done before, "
        f"{len(todo)} to run on {args.jobs} worker(s); state in {state}",
        flush=True,
    )
    for result in sorted(done.values(), key=lambda r: r.seed):
        if not result.passed:
            print(describe_failure(args.scenario, result, args.plant_bug), flush=True)
    started = time.perf_counter()
    if todo:
        bugs = tuple(args.plant_bug)
        jobs = [(args.scenario, seed, args.output, bugs) for seed in todo]
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.jobs) as pool, state.open("a", encoding="utf-8") as sink:
            for finished, result in enumerate(pool.imap_unordered(run_seed, jobs), 1):
                done[result.seed] = result
                document = asdict(result)
                document["violations"] = list(result.violations)
                sink.write(json.dumps(document) + "\n")
                sink.flush()
                if not result.passed:
                    print(describe_failure(args.scenario, result, args.plant_bug), flush=True)
                if finished % args.progress == 0 or finished == len(todo):
                    failing = sum(not r.passed for r in done.values())
                    print(
                        f"  {finished}/{len(todo)} run, {failing} failing so far, "
                        f"{time.perf_counter() - started:.0f} s",
                        flush=True,
                    )
    failed = sorted(r.seed for r in done.values() if not r.passed)
    print()
    print(f"seeds {len(done)}, passed {len(done) - len(failed)}, failed {len(failed)}")
    for seed in failed:
        print(f"  {replay(args.scenario, seed, args.plant_bug)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
