"""What a report covers, against what its experiment declares, read from the run folder alone.

The resolved experiment (config.resolved.yaml) declares the cells: every method label x seed, each
planned to its last iteration (``iterations`` for a trained method, 0 for a static workflow). The
run folder records what happened: the store's eval_items say which iterations of a cell have scores,
and the runner's done marker (``done/<label>.seed<k>``, harness.run_folder.done_marker) is written
once a cell's last evaluation and its transfers are stored. A cell is

- done: its marker exists and its planned last iteration has scores;
- in progress: it has scores but is not done (what the report shows is iteration k of K);
- not run: it has no scores (another --seeds / --methods selection, or not reached yet).

A run started with ``--seeds`` or ``--methods``, or a report written while the run is going, covers
less than the file declares: the report says so at its top, marks each method that is still in
progress, and logs a method's numbers to MLflow as final only once its cells with scores are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from spogw.harness.config import ExperimentConfig


@dataclass(frozen=True)
class Cell:
    """One declared (method label, seed) and how far the run folder has it."""

    label: str
    seed: int
    planned: int
    """The last iteration the experiment plans for it: ``iterations`` (trained) or 0 (static)."""
    static: bool
    evaluated: int | None
    """The latest iteration scored by the method's own executor; None: no scores yet."""
    done: bool
    """The runner marked it done and its planned last iteration has scores."""

    @property
    def state(self) -> str:
        if self.done:
            return "done"
        return "not run" if self.evaluated is None else "in progress"


@dataclass(frozen=True)
class Coverage:
    """Every declared cell of an experiment with its state (declaration order: methods, then seeds)."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    iterations: int
    cells: tuple[Cell, ...]

    def _scored(self) -> list[Cell]:
        return [cell for cell in self.cells if cell.evaluated is not None]

    @property
    def complete(self) -> bool:
        return all(cell.done for cell in self.cells)

    def methods_with_scores(self) -> list[str]:
        scored = {cell.label for cell in self._scored()}
        return [label for label in self.methods if label in scored]

    def seeds_with_scores(self) -> list[int]:
        scored = {cell.seed for cell in self._scored()}
        return [seed for seed in self.seeds if seed in scored]

    def finished_methods(self) -> list[str]:
        """Methods with scores whose every cell with scores is done: their numbers are final."""
        return [
            label
            for label in self.methods_with_scores()
            if all(cell.done for cell in self._scored() if cell.label == label)
        ]

    def progress(self, label: str) -> str:
        """'' for a finished method (or one without scores), else 'in progress (iteration k of K)':
        k is the iteration the report's final tables show for it (its latest scored iteration)."""
        scored = [cell for cell in self._scored() if cell.label == label]
        if not scored or all(cell.done for cell in scored):
            return ""
        if scored[0].static:
            return "in progress (evaluation not finished)"
        shown = max(cell.evaluated or 0 for cell in scored)
        return f"in progress (iteration {shown} of {scored[0].planned})"

    def marks(self) -> dict[str, str]:
        """Method label -> ': in progress (...)' for each method still in progress (text after its name)."""
        return {label: f": {text}" for label in self.methods if (text := self.progress(label))}

    def statement(self) -> str:
        """The report's first line about coverage: complete, or what is partial against the file."""
        declared = (
            f"The experiment file declares methods [{', '.join(self.methods)}] x seeds {list(self.seeds)}, "
            f"{self.iterations} iterations."
        )
        if self.complete:
            return f"Complete: every declared method x seed has finished. {declared}"
        seeds, methods = self.seeds_with_scores(), self.methods_with_scores()
        parts = []
        if not methods:
            parts.append("nothing has been evaluated yet")
        elif seeds != list(self.seeds):
            parts.append(f"seeds {seeds} of {list(self.seeds)}")
        unscored = [label for label in self.methods if label not in methods]
        if methods and unscored:
            parts.append(f"methods {', '.join(unscored)} not run")
        gaps = [
            f"{c.label} seed {c.seed}"
            for c in self.cells
            if c.state == "not run" and c.label in methods and c.seed in seeds
        ]
        if gaps:
            parts.append(f"not run: {', '.join(gaps)}")
        running = [
            f"{c.label} seed {c.seed} ({'evaluating' if c.static else f'iteration {c.evaluated} of {c.planned}'})"
            for c in self.cells
            if c.state == "in progress"
        ]
        if running:
            parts.append(f"in progress: {', '.join(running)}")
        return f"**Partial**: {'; '.join(parts)}. {declared} Every number below is over the scores that exist."

    def missing(self) -> str:
        """For the study sections: the declared arms and seeds without scores ('' when none)."""
        methods, seeds = self.methods_with_scores(), self.seeds_with_scores()
        parts = []
        if unscored := [label for label in self.methods if label not in methods]:
            parts.append(f"arms without scores (not run): {', '.join(unscored)}")
        if methods and (absent := [seed for seed in self.seeds if seed not in seeds]):
            parts.append(f"seeds without scores (not run): {absent}")
        return ("Not shown: " + "; ".join(parts) + ".") if parts else ""


def coverage(config: ExperimentConfig, frame: pd.DataFrame, run_dir: Path | None = None) -> Coverage:
    """The declared cells of ``config`` and their state, from the item frame of the method's own
    executor (``frame``: harness.scores.item_score_frame rows with transfer '') and the done markers
    in ``run_dir`` (None: no folder to read, so no cell counts as done)."""
    from spogw.harness.config import method_config
    from spogw.harness.run_folder import done_marker
    from spogw.methods.config import method_kind

    latest = frame.groupby(["method", "seed"])["iteration"].max().to_dict() if not frame.empty else {}
    cells = []
    for spec in config.methods:
        label = spec.display_label
        static = method_kind(method_config(spec)) != "trained"  # a search is evaluated once, like a static workflow
        planned = 0 if static else config.iterations
        for seed in config.seeds:
            evaluated = latest.get((label, seed))
            marked = run_dir is not None and done_marker(run_dir, label, seed).exists()
            evaluated = None if evaluated is None else int(evaluated)
            cells.append(Cell(label, seed, planned, static, evaluated, marked and evaluated == planned))
    labels = tuple(spec.display_label for spec in config.methods)
    return Coverage(labels, tuple(config.seeds), config.iterations, tuple(cells))
