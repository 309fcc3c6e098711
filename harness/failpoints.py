"""Named crash points: the kill tests SIGKILL a run at places chosen at random, not by luck of timing.

The runner calls `hit("store.rollouts")`, `hit("train.step")`, `hit("write.report.md")`, ... at the
moments where a crash is most interesting (just after a batch is committed, between an optimizer
step and the next, before a file's rename). Unconfigured, `hit` is one `is None` check. Configured,
each hit can kill the process with SIGKILL: exactly what `kill -9`, the OOM killer or a pre-empted
node does, with no chance to clean up.

Configure with the environment (or `configure()` in a forked child):

- ``SPOGW_FAILPOINTS="store.rollouts=3"``: die at the 3rd hit of that site (``*`` counts every
  site, ``phase:training`` every site of that phase); several entries separated by commas;
- ``SPOGW_FAILPOINTS="p=0.2,seed=7,phase=training"``: at each hit of a site of that phase (any
  phase when omitted), die with probability p (seeded: a chaos run is reproducible);
- ``signal=INT`` (or ``TERM``) in the list: a chosen hit sends that signal instead of SIGKILL (what
  Ctrl-C does: the CLI's interruption path is tested with it);
- ``error=ENOSPC`` (or any errno name: ``EACCES``, ``EROFS``, ...): a chosen hit raises that
  OSError instead (a full disk or a read-only folder, without filling a disk or needing non-root);
- ``SPOGW_FAILPOINT_TRACE=/path/trace.txt``: append each hit's site name, one per line (which
  sites a run passes, and where a killed process was).

tests/chaos.py drives many kills in a row and checks that the resumed run's tables equal an
uninterrupted run's; docs/reliability.md has the figures.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

ENV = "SPOGW_FAILPOINTS"
TRACE_ENV = "SPOGW_FAILPOINT_TRACE"

PHASES = ("starting", "collection", "training", "search", "evaluation", "report")


def phase_of(site: str) -> str:
    """Which part of a run a site belongs to (the kill test's coverage is counted per phase)."""
    if site == "store.rollouts":
        return "collection"
    if site == "store.search_rounds":
        return "search"
    if site.startswith(("train.", "checkpoint.")) or site in ("store.iterations", "store.steps", "store.groups"):
        return "training"
    if site in ("store.eval_items", "run.method_done"):
        return "evaluation"
    if site.startswith("write.") and not site.startswith(("write.config.resolved", "write.tracking.json")):
        return "report"
    return "starting"


@dataclass
class Plan:
    at: dict[str, int] = field(default_factory=dict)
    """site (or '*') -> the hit number that kills."""
    probability: float = 0.0
    phase: str | None = None
    seed: int = 0
    trace: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    sends: signal.Signals = signal.SIGKILL
    """What a chosen hit sends to the process (unless ``error`` is set)."""
    error: int | None = None
    """An errno: a chosen hit raises OSError(error) at the site instead of a signal."""

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self._trace = open(self.trace, "a", buffering=1) if self.trace else None  # noqa: SIM115 (lives with the process)

    def hit(self, site: str) -> None:
        with self._lock:
            if self._trace is not None:
                self._trace.write(site + "\n")
                self._trace.flush()
            die = False
            for counter in (site, "*", f"phase:{phase_of(site)}"):
                self.counts[counter] = self.counts.get(counter, 0) + 1
                die = die or self.at.get(counter) == self.counts[counter]
            if self.probability and (self.phase is None or phase_of(site) == self.phase):
                die = die or self._random.random() < self.probability
        if die and self.error is not None:
            raise OSError(self.error, os.strerror(self.error), f"<failpoint {site}>")
        if die:
            os.kill(os.getpid(), self.sends)


def parse(spec: str, trace: str | None = None) -> Plan:
    """``"site=N,..."`` or ``"p=0.2,seed=7,phase=training"`` -> a Plan (ValueError names the bad entry)."""
    at: dict[str, int] = {}
    probability, phase, seed = 0.0, None, 0
    sent, error = signal.SIGKILL, None
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = entry.partition("=")
        try:
            if name == "p":
                probability = float(value)
            elif name == "seed":
                seed = int(value)
            elif name == "phase" and value in PHASES:
                phase = value
            elif name == "phase":
                raise ValueError
            elif name == "signal":
                sent = signal.Signals[f"SIG{value}"] if value in ("INT", "TERM", "KILL") else _bad()
            elif name == "error":
                error = getattr(errno, value) if value.startswith("E") and hasattr(errno, value) else _bad()
            else:
                at[name] = int(value)
        except ValueError:
            raise ValueError(
                f"{ENV}: cannot read {entry!r} (site=N, p=FLOAT, seed=INT, phase={'|'.join(PHASES)}, "
                "signal=INT|TERM|KILL, error=ENOSPC|EACCES|...)"
            ) from None
    return Plan(at, probability, phase, seed, trace, sends=sent, error=error)


def _bad() -> Any:
    raise ValueError


_plan: Plan | None = None


def configure(spec: str | None, trace: str | None = None) -> None:
    """Arm (or, with neither argument, disarm) the crash points of this process."""
    global _plan
    _plan = parse(spec or "", trace) if (spec or trace) else None


def hit(site: str) -> None:
    """A crash point. Free when no plan is armed."""
    if _plan is not None:
        _plan.hit(site)


configure(os.environ.get(ENV), os.environ.get(TRACE_ENV))
