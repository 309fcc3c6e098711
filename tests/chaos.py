"""Kill `spogw run` with SIGKILL again and again, resuming each time, and record where each kill landed.

    python tests/chaos.py EXPERIMENT --out DIR [--kills 20] [--min-per-phase 3] [--seed 0] [--set k=v ...]

1. A baseline: the experiment run once, uninterrupted, with every crash point traced
   (``DIR/baseline``). Its trace says how many crash points each phase passes; its wall time bounds
   the timer kills.
2. Chains: a chain is a fresh run folder (``DIR/chain<k>``) that is killed and resumed until a life
   completes. Each life is one `spogw run`, in a child forked from this process, so Python's imports
   are paid once and a life costs only the run's own work. A life dies one of two ways:
   - at a crash point (harness/failpoints.py): each chain draws ``--per-chain`` crash points of each
     phase at random from the baseline's trace and kills at them in the order the baseline passed
     them (the count of a phase's crash points restarts in each life, less what earlier lives of the
     chain passed), so every phase is hit in every chain and each life gets further than the last;
   - by a timer (``--timer-kills`` lives per chain, at random places in the plan): SIGKILL from
     this process after the baseline's start-up plus a delay drawn uniformly over the baseline's
     time between the chain's planned kills before and after it (the life resumes at the one
     before), which lands anywhere, between crash points too.
   The last life of a chain runs to completion. Chains are started until at least ``--kills`` kills
   happened and each phase got ``--min-per-phase`` of them.

``DIR/chaos.json`` lists every kill (chain, life, how, the last crash point passed, its phase) and
the folders; tests/test_reliability.py compares each chain's tables with the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spogw.harness import failpoints  # noqa: E402
from spogw.harness.store import TABLES  # noqa: E402

KILLED_PHASES = ("collection", "training", "search", "evaluation", "report")
"""The phases kills are aimed at: those of them the baseline passes crash points of (a search only
when the experiment has a search method)."""


def _preload() -> None:
    """Import everything a run imports before forking (and run nothing that starts threads)."""
    import matplotlib

    matplotlib.use("Agg")
    import mlflow  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import spogw.harness.cli
    import spogw.harness.runner
    import spogw.reports.report  # noqa: F401


def life(
    argv: list[str],
    log: Path,
    trace: Path,
    plan: str | None,
    kill_after_s: float | None,
    times: list[float] | None = None,
) -> int:
    """One `spogw run` in a forked child; returns its wait status as a return code (-9: SIGKILL).
    ``times``: filled with the seconds from the start at which each line of the trace appeared."""
    child = os.fork()
    if child == 0:  # the child: a run, as `spogw run` would do it, then _exit (no parent clean-up)
        code = 1
        try:
            handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(handle, 1)
            os.dup2(handle, 2)
            failpoints.configure(plan, str(trace))
            from spogw.harness.cli import main

            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    start = time.monotonic()

    def timed() -> None:  # the crash points passed since the last look, timed now
        if times is not None and trace.exists():
            times.extend([time.monotonic() - start] * (trace.read_bytes().count(b"\n") - len(times)))

    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            timed()  # those passed in the last few milliseconds too
            return os.waitstatus_to_exitcode(status)
        if kill_after_s is not None and time.monotonic() - start >= kill_after_s:
            os.kill(child, signal.SIGKILL)
            kill_after_s = None
        timed()
        time.sleep(0.005)


def last_site(trace: Path) -> str:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return lines[-1] if lines else "(none)"


def run_tables(run_dir: Path) -> dict[str, list[tuple[object, ...]]]:
    """A run folder's tables, rows sorted, without the elapsed-time columns (all that a resumed run
    may change): what a crashed-and-resumed run must reproduce exactly."""
    import sqlite3

    elapsed = {"wall_s", "collect_s", "train_s", "tokens_per_s"}
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:
        out = {}
        for table in TABLES:
            columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})") if c[1] not in elapsed]
            if not columns:
                continue  # a table the folder predates
            out[table] = sorted(db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall(), key=repr)
        return out


def phase_hits(trace: Path) -> dict[str, int]:
    hits = dict.fromkeys(failpoints.PHASES, 0)
    for site in trace.read_text().splitlines():
        hits[failpoints.phase_of(site)] += 1
    return hits


def chaos(
    experiment: str,
    out: Path,
    settings: list[str],
    kills_wanted: int,
    min_per_phase: int,
    seed: int,
    per_chain: int = 2,
    timer_kills: int = 1,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def argv(run_dir: Path) -> list[str]:
        return ["run", experiment, "--run-dir", str(run_dir), "--quiet", *(a for s in settings for a in ("--set", s))]

    baseline = out / "baseline"
    start = time.monotonic()
    reached: list[float] = []  # when the baseline passed each crash point
    code = life(argv(baseline), out / "baseline.log", out / "baseline.trace", None, None, reached)
    assert len(reached) == len((out / "baseline.trace").read_text().splitlines()), "every crash point timed"
    baseline_s = time.monotonic() - start
    if code != 0:
        raise SystemExit(f"the uninterrupted run failed (exit {code}); see {out / 'baseline.log'}")
    hits = phase_hits(out / "baseline.trace")
    print(f"baseline: {baseline_s:.1f} s, crash points passed per phase {hits}", flush=True)

    sequence = (out / "baseline.trace").read_text().splitlines()
    positions = {p: [i for i, site in enumerate(sequence) if failpoints.phase_of(site) == p] for p in KILLED_PHASES}
    aimed = [p for p in KILLED_PHASES if positions[p]]
    kills: list[dict[str, Any]] = []
    chains: list[str] = []
    lives = 0

    def covered() -> bool:
        counts = [sum(k["phase"] == p for k in kills) for p in aimed]
        return len(kills) >= kills_wanted and min(counts) >= min_per_phase

    while not covered():
        chain = out / f"chain{len(chains)}"
        chains.append(str(chain))
        picks = sorted(i for p in aimed for i in rng.sample(positions[p], min(per_chain, len(positions[p]))))
        planned: list[tuple[str, int] | float] = []
        for index in picks:
            phase = failpoints.phase_of(sequence[index])
            planned.append((phase, positions[phase].index(index) + 1))
        for _ in range(timer_kills):
            # the timer's delay: the baseline's start-up, then a time drawn over the baseline's time
            # between the planned kills around it (the life resumes at the one before). Drawn over the
            # whole run, it would often outlast what is left to do, and the chain would end with its
            # later kills never reached.
            at = rng.randrange(len(planned) + 1)
            before = reached[picks[at - 1]] if at > 0 else reached[0]
            after = reached[picks[at]] if at < len(picks) else baseline_s
            planned.insert(at, reached[0] + rng.uniform(0.0, after - before))
            picks.insert(at, picks[at - 1] if at > 0 else 0)
        passed = dict.fromkeys(failpoints.PHASES, 0)
        for step in [*planned, "complete"]:
            lives += 1
            trace = out / f"{chain.name}.life{lives}.trace"
            if step == "complete":
                how, plan, delay = "none", None, None
            elif isinstance(step, float):
                how, plan, delay = "timer", None, step
            else:
                phase, number = step
                number = max(1, number - passed[phase])  # resumed lives redo a little: an underestimate
                how, plan, delay = f"crash point ({phase} #{number} of this life)", f"phase:{phase}={number}", None
            code = life(argv(chain), out / f"{chain.name}.log", trace, plan, delay)
            if code == 0:
                break
            if code != -signal.SIGKILL:
                log = out / f"{chain.name}.log"
                raise SystemExit(f"{chain.name} life {lives} exited {code} (not killed); see {log}")
            for phase, count in phase_hits(trace).items():
                passed[phase] += count
            site = last_site(trace)
            phase = failpoints.phase_of(site) if site != "(none)" else "starting"
            kills.append({"chain": chain.name, "life": lives, "how": how, "last_site": site, "phase": phase})
            print(f"{chain.name} life {lives}: killed by {how} after {site} ({phase})", flush=True)
        else:
            raise SystemExit(f"{chain.name} did not complete after its planned kills; see {out}")
    summary = {
        "baseline": str(baseline),
        "baseline_s": baseline_s,
        "baseline_hits": hits,
        "chains": chains,
        "lives": lives,
        "kills": kills,
        "kills_per_phase": {p: sum(k["phase"] == p for k in kills) for p in failpoints.PHASES},
        "distinct_sites": sorted({k["last_site"] for k in kills}),
        "seconds": time.monotonic() - start,
    }
    (out / "chaos.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--min-per-phase", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-chain", type=int, default=2, help="crash-point kills per phase per chain")
    parser.add_argument("--timer-kills", type=int, default=1, help="timer kills per chain")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    _preload()
    summary = chaos(
        args.experiment,
        args.out,
        args.set,
        args.kills,
        args.min_per_phase,
        args.seed,
        args.per_chain,
        args.timer_kills,
    )
    print(
        f"{len(summary['kills'])} kills over {len(summary['chains'])} chain(s), {summary['lives']} lives, "
        f"{summary['seconds']:.0f} s; per phase {summary['kills_per_phase']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
