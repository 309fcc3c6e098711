"""What a long command tells its user while it works, on a terminal and in logs.

On a terminal (stderr is a TTY) a run shows tqdm bars: one over its (method, seed) cells, one inside
collection. Anywhere else (nohup, CI, a cluster job's log file) bars are useless, so the run logs
one line per phase instead: cell k of n, method, seed, iteration, phase, the counts it works on,
the time elapsed and an ETA. The same lines always go to ``<run_dir>/run.log``, terminal or not.

Third-party noise (weight-loading bars, deprecation warnings inside transformers and peft) says
nothing a user can act on: deprecation warnings from those packages are always silenced, and their
progress bars with ``--quiet`` or when stderr is not a terminal.

Loggers: ``spogw`` for notices a user must see (a first-use build, a run that cannot learn),
``spogw.progress`` for the per-phase lines (on stderr only when it is not a terminal).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

LOGGER = "spogw"
PROGRESS_LOGGER = "spogw.progress"
LOG_FORMAT = "%(asctime)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
RUN_LOG = "run.log"

log = logging.getLogger(LOGGER)
progress_log = logging.getLogger(PROGRESS_LOGGER)


def interactive() -> bool:
    """True when stderr is a terminal (bars are drawn; phase lines are not printed)."""
    return sys.stderr.isatty()


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record is written (pytest and notebooks swap it)."""

    _spogw_console = True  # found and replaced by the next configure()

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


class _NotProgress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(PROGRESS_LOGGER)


def configure(quiet: bool = False) -> None:
    """Set up the ``spogw`` loggers on stderr and silence third-party noise (called once by the CLI).

    ``quiet``: no bars and no phase lines (notices and errors still print)."""
    for package in ("transformers", "peft", "accelerate", "torch", "mlflow", "sqlalchemy", "optuna"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=package)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=package)
    if quiet or not interactive():
        # read when huggingface_hub / transformers are imported, which the CLI does later
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
    root = logging.getLogger(LOGGER)
    root.setLevel(logging.INFO)
    for handler in [h for h in root.handlers if getattr(h, "_spogw_console", False)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(
        logging.Formatter("%(message)s") if interactive() else logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    )
    if interactive() or quiet:
        # a terminal has the bars; --quiet has neither. Notices (a run that cannot learn, a
        # first-use build) still print.
        handler.addFilter(_NotProgress())
    root.addHandler(handler)


def say(text: str) -> None:
    """A notice the user must see now (stderr, and the run log when one is open)."""
    log.info(text)
    if not any(getattr(h, "_spogw_console", False) for h in log.handlers):  # a library use, no CLI
        print(text, file=sys.stderr)


def duration(seconds: float) -> str:
    """``3725`` -> ``1h02m``; ``75`` -> ``1m15s``; ``9.5`` -> ``10s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class RunProgress:
    """Progress over a run's cells (a tqdm bar on a terminal) and one log line per phase.

    The ETA extrapolates the work done by this process: each cell counts 1, and a trained cell's
    iteration k of K counts k/(K+1) of it (iteration k's phases all start after k/(K+1) of the cell
    is done). Cells finished by an earlier process (a resumed run) are skipped, not counted."""

    def __init__(self, name: str, total: int, run_dir: Path | None, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.name, self.total = name, total
        self.done = 0
        self._ran = 0.0  # cells (fractions included) worked through by this process
        self._skipped = 0
        self._start = time.monotonic()
        self._bar = tqdm(total=total, desc=name, unit="cell", disable=None if enabled else True)
        self._file: logging.Handler | None = None
        if run_dir is not None:
            self._file = logging.FileHandler(run_dir / RUN_LOG, encoding="utf-8")
            self._file.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
            logging.getLogger(LOGGER).addHandler(self._file)
            logging.getLogger(LOGGER).setLevel(logging.INFO)

    def eta(self, fraction_of_cell: float = 0.0) -> str:
        """'ETA 12m30s', or why there is none yet."""
        worked = self._ran + fraction_of_cell
        remaining = self.total - self._skipped - worked
        if worked <= 0:
            return "ETA not known yet"
        return f"ETA {duration(self._elapsed_s() * remaining / worked)}"

    def phase(
        self,
        label: str,
        seed: int,
        phase: str,
        iteration: int | None = None,
        iterations: int | None = None,
        counts: str = "",
    ) -> None:
        """Cell ``label`` seed ``seed`` starts ``phase`` (at ``iteration`` of ``iterations``)."""
        fraction = iteration / (iterations + 1) if iteration is not None and iterations is not None else 0.0
        where = f"{label} seed {seed}" + (f" iteration {iteration}/{iterations}" if iteration is not None else "")
        text = f"{where}: {phase}" + (f" ({counts})" if counts else "")
        self._bar.set_postfix_str(text)
        elapsed = duration(self._elapsed_s())
        progress_log.info(
            f"{self.name}: cell {self.done + 1}/{self.total} {text} | elapsed {elapsed}, {self.eta(fraction)}"
        )

    def note(self, text: str) -> None:
        """A step outside the cells (writing the report)."""
        progress_log.info(f"{self.name}: {text} | elapsed {duration(self._elapsed_s())}")

    def skipped(self) -> None:
        """A cell an earlier process finished."""
        self.done += 1
        self._skipped += 1
        self._bar.update(1)

    def finished(self, label: str, seed: int) -> None:
        self.done += 1
        self._ran += 1
        self._bar.update(1)
        elapsed = duration(self._elapsed_s())
        left = f", {self.eta()}" if self.done < self.total else ""
        progress_log.info(
            f"{self.name}: cell {self.done}/{self.total} {label} seed {seed} done | elapsed {elapsed}{left}"
        )

    def _elapsed_s(self) -> float:
        return time.monotonic() - self._start

    def close_bar(self) -> None:
        """The cells are done: the bar goes, the log lines go on (the report is written next)."""
        self._bar.close()

    def close(self) -> None:
        self._bar.close()
        if self._file is not None:
            logging.getLogger(LOGGER).removeHandler(self._file)
            self._file.close()
            self._file = None
