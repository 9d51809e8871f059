"""Proof that the harness catches bugs: each planted bug, caught by the right checker.

    python simulations/planted_bugs.py [--max-seeds 200] [--all] [--jobs 2] [--bug NAME ...]
                                       [--verify-determinism]

For every bug in ``p2pindex.sim.planted.PLANTED_BUGS`` this runs its scenario
(p2pindex/sim/scenarios/planted-<bug>.toml) with the bug planted on seeds 1, 2, ... until a run's
violations include the checker that guards the broken rule (or ``--max-seeds`` pass), then
runs the same scenario on the same seeds *without* the bug, which must show no violation at
all: a catch proves something only if the real code passes the very same runs. ``--all``
runs every seed up to ``--max-seeds`` and reports the catch rate instead of stopping early.
``--verify-determinism`` reruns each catching seed and requires the same trace hash.

Prints one table row per bug: scenario, first catching seed, seeds run, the checker that
caught it (others that fired too in brackets), CPU seconds with the bug, and the baseline
(seeds run without it, violations, CPU seconds). Exits 1 if a bug went uncaught, was caught
only by the wrong checker, or the baseline failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2pindex.sim.determinism import reexec_with_fixed_hash_seed
from p2pindex.sim.plan import plan_run
from p2pindex.sim.planted import PLANTED_BUGS
from p2pindex.sim.runner import run_simulation
from p2pindex.sim.scenario import load_scenario

HERE = Path(__file__).resolve().parent

EXPECTED: dict[str, str] = {
    "lww": "lost_writes",
    "ack-before-commit": "lost_writes",
    "hints-dropped-on-restart": "lost_writes",
    "early-tombstone-reap": "resurrection",
    "no-dots": "siblings",
    "swim-no-suspicion": "membership",
    "definite-after-send": "unexpected_values",
    "ack-failed-commit": "lost_writes",
}
"""The checker that guards the rule each bug breaks."""


RUN_ERROR = "run error"
"""Stands for a checker when an error escaped the simulation itself (never a catch)."""


def scenario_path(bug: str) -> Path:
    return HERE.parent / "p2pindex" / "sim" / "scenarios" / f"planted-{bug}.toml"


Job = tuple[str | None, str, int]
"""(bug planted or None, whose scenario, seed)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One run, reduced to what the table needs (picklable for the worker pool)."""

    bug: str | None
    seed: int
    checkers: tuple[str, ...]
    """Distinct checkers that reported violations, most frequent first."""
    violations: int
    cpu: float
    trace_hash: str


def run_one(bug: str | None, scenario_bug: str, seed: int) -> Outcome:
    """Run ``scenario_bug``'s scenario on ``seed`` with ``bug`` planted (None: no bug)."""
    scenario = load_scenario(scenario_path(scenario_bug))
    if bug is not None:
        scenario = scenario.with_overrides(planted_bugs=[bug])
    plan = plan_run(scenario, seed)
    started = time.process_time()
    try:
        result = run_simulation(plan)
    except Exception as exc:  # outside trio.run: an error escaping a run is reported
        name = type(exc).__name__
        return Outcome(bug, seed, (f"{RUN_ERROR}: {name}",), 1, time.process_time() - started, "")
    counts = Counter(v.checker for v in result.violations)
    return Outcome(
        bug,
        seed,
        tuple(name for name, _ in counts.most_common()),
        len(result.violations),
        result.cpu_seconds,
        result.trace_hash,
    )


def _run_job(job: Job) -> Outcome:
    return run_one(*job)


@dataclass(slots=True)
class BugReport:
    bug: str
    expected: str
    runs: list[Outcome] = field(default_factory=list)
    baseline: list[Outcome] = field(default_factory=list)
    repeat_hash: str | None = None

    @property
    def catches(self) -> list[Outcome]:
        return [run for run in self.runs if self.expected in run.checkers]

    @property
    def wrong(self) -> list[Outcome]:
        """Runs that found violations, but none from the expected checker."""
        return [run for run in self.runs if run.checkers and self.expected not in run.checkers]

    @property
    def baseline_failures(self) -> list[Outcome]:
        return [run for run in self.baseline if run.violations]

    @property
    def deterministic(self) -> bool:
        first = self.catches[0] if self.catches else None
        return first is None or self.repeat_hash in (None, first.trace_hash)

    @property
    def ok(self) -> bool:
        return bool(self.catches) and not self.baseline_failures and self.deterministic


class Pool:
    """Runs jobs here, one at a time, or on spawned workers (each re-imports under the
    PYTHONHASHSEED=0 this process already has, so results do not depend on ``--jobs``)."""

    def __init__(self, jobs: int) -> None:
        self._pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None

    def run(self, jobs: list[Job]) -> Iterator[Outcome]:
        if self._pool is None:
            return (_run_job(job) for job in jobs)
        return self._pool.imap(_run_job, jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()


def hunt(bug: str, pool: Pool, max_seeds: int, every_seed: bool, batch: int) -> BugReport:
    """Run seeds 1.. with the bug until the expected checker fires (or all, with --all)."""
    report = BugReport(bug, EXPECTED[bug])
    seed = 1
    while seed <= max_seeds and (every_seed or not report.catches):
        seeds = range(seed, min(seed + batch, max_seeds + 1))
        report.runs.extend(pool.run([(bug, bug, s) for s in seeds]))
        seed = seeds[-1] + 1
    if not every_seed and report.catches:
        first = report.catches[0].seed
        report.runs = [run for run in report.runs if run.seed <= first]
    report.baseline = list(pool.run([(None, bug, run.seed) for run in report.runs]))
    return report


def table(reports: Sequence[BugReport], every_seed: bool) -> str:
    header = (
        "bug",
        "scenario",
        "first catch",
        "seeds run",
        "caught" if every_seed else "checker",
        "CPU s (bug)",
        "baseline: seeds, violations, CPU s",
    )
    rows = [header]
    for report in reports:
        catches = report.catches
        others = sorted(
            {name for run in catches for name in run.checkers if name != report.expected}
        )
        checker = report.expected + (f" (+{', '.join(others)})" if others else "")
        if not catches:
            seen = sorted({name for run in report.wrong for name in run.checkers})
            checker = f"NOT CAUGHT (seen: {', '.join(seen) or 'nothing'})"
        elif every_seed:
            checker = f"{len(catches)}/{len(report.runs)} by {checker}"
        baseline_violations = sum(run.violations for run in report.baseline)
        rows.append(
            (
                report.bug,
                scenario_path(report.bug).name,
                str(catches[0].seed) if catches else "-",
                str(len(report.runs)),
                checker,
                f"{sum(run.cpu for run in report.runs):.1f}",
                f"{len(report.baseline)}, {baseline_violations}, "
                f"{sum(run.cpu for run in report.baseline):.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seeds", type=int, default=200, help="seeds to try per bug")
    parser.add_argument("--all", action="store_true", help="run every seed (catch rate)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--bug", action="append", choices=sorted(EXPECTED), help="only this bug (repeatable)"
    )
    parser.add_argument(
        "--verify-determinism",
        action="store_true",
        help="rerun each catching seed and require the same trace hash",
    )
    args = parser.parse_args(argv)
    if set(EXPECTED) != PLANTED_BUGS:
        parser.error(f"EXPECTED does not list exactly the planted bugs {sorted(PLANTED_BUGS)}")
    if args.max_seeds < 1 or args.jobs < 1:
        parser.error("--max-seeds and --jobs must be at least 1")
    reexec_with_fixed_hash_seed()
    pool = Pool(args.jobs)
    reports = []
    try:
        for bug in args.bug or sorted(EXPECTED):
            report = hunt(bug, pool, args.max_seeds, args.all, batch=args.jobs)
            if args.verify_determinism and report.catches:
                first = report.catches[0]
                report.repeat_hash = next(pool.run([(bug, bug, first.seed)])).trace_hash
            reports.append(report)
            print(_progress(report), flush=True)
    finally:
        pool.close()
    print()
    print(table(reports, args.all))
    failed = [r for r in reports if not r.ok]
    for report in failed:
        for run in report.baseline_failures:
            print(
                f"baseline FAILED: {report.bug}'s scenario without the bug, seed {run.seed}: "
                f"{run.violations} violation(s) from {', '.join(run.checkers)}"
            )
        if not report.deterministic:
            print(f"NOT DETERMINISTIC: {report.bug} seed {report.catches[0].seed}")
    return 1 if failed else 0


def _progress(report: BugReport) -> str:
    catches = report.catches
    first = f"caught on seed {catches[0].seed}" if catches else "not caught"
    if report.wrong:
        first += f" ({len(report.wrong)} run(s) caught by other checkers only)"
    hashes = ""
    if report.repeat_hash is not None and catches:
        same = report.repeat_hash == catches[0].trace_hash
        hashes = f", rerun {'same' if same else 'DIFFERENT'} hash {catches[0].trace_hash[:12]}"
    failing = [f"seed {run.seed}: {', '.join(run.checkers)}" for run in report.baseline_failures]
    return (
        f"{report.bug}: {first} after {len(report.runs)} seed(s){hashes}; baseline "
        f"{len(failing)} failing of {len(report.baseline)}"
        + (f" ({'; '.join(failing)})" if failing else "")
    )


if __name__ == "__main__":
    sys.exit(main())
