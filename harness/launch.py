"""`spogw run` under a launcher (`accelerate launch` / `torchrun`): one cell trained on several GPUs.

Rank 0 runs the cell as one process would: it holds the run folder, collects, evaluates, writes the
store, tracks, and writes checkpoints and the report. Every rank joins each update step
(harness/distributed.py: each forwards its share of the step's sequences, gradients are summed,
every rank takes the same optimizer step). The other ranks ("followers") do no collection and no
evaluation: before each update they wait until rank 0 says that the rollouts it collected are in
the cell's shard, and read them from there (the same rows, in the same order, as rank 0's).

Why files and not a collective for that wait: rank 0 may spend hours evaluating and collecting
between two updates, and a blocked collective (barrier, broadcast) times out long before (gloo's
and NCCL's default is 30 minutes). `CollectionSync` writes one small file per event in the cell's
folder, ``cells/<cell>/.sync/<token>/``, atomically; followers poll for the one they need. Rank 0
decides and announces everything a follower must agree on: the iteration the cell starts at (after
it loaded the checkpoint: ``start``), each collection by (iteration, batch) (``collected-<k>-<b>``),
and the end of its work on the cell, done or failed or already done before (``ended``). The token
is new in each launch (broadcast once at the start, when every rank is there), so events left by a
killed launch are never taken for this one's.

The ranks of one cell share a machine: the shard is SQLite in WAL mode, which readers on other
hosts cannot share. Many cells at once across machines: `spogw run --ray` (harness/cluster.py).
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from spogw.harness.atomic import atomic_write_text
from spogw.harness.distributed import Ranks

SYNC_DIR = ".sync"
POLL_S = 0.5
START, ENDED = "start", "ended"


def launch_token(ranks: Ranks) -> str:
    """A token rank 0 draws and every rank receives (one broadcast; every rank must call it)."""
    token = secrets.token_hex(8) if ranks.main else ""
    if ranks.world == 1:
        return token
    import torch.distributed as dist

    shared = [token]
    dist.broadcast_object_list(shared, src=0)
    return str(shared[0])


class LaunchEnded(RuntimeError):
    """Rank 0 ended the cell (done, failed, or done before this launch) while a follower waited."""


@dataclass(frozen=True)
class CollectionSync:
    """Rank 0 announces; a follower waits for the announcement it needs."""

    folder: Path
    """The cell's folder (harness/cells.py)."""
    token: str
    ranks: Ranks

    @property
    def events(self) -> Path:
        return self.folder / SYNC_DIR / self.token

    def _announce(self, name: str, text: str = "") -> None:
        if self.ranks.main:
            self.events.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.events / name, text + "\n")

    def _wait(self, name: str) -> str:
        """A follower: the text of event ``name`` once rank 0 wrote it. Raises LaunchEnded when rank
        0 ended the cell first (an update step without rank 0 would wait for it forever)."""
        while True:
            if (self.events / name).is_file():
                return (self.events / name).read_text().strip()
            if (self.events / ENDED).is_file():
                raise LaunchEnded(f"rank 0 ended the cell before {name!r} ({self.events})")
            time.sleep(POLL_S)

    def started(self, iteration: int) -> None:
        """Rank 0: the cell starts at ``iteration`` (its checkpoint loaded); older launches' events go."""
        if self.ranks.main:
            for old in (self.folder / SYNC_DIR).glob("*"):
                if old.name != self.token:
                    shutil.rmtree(old, ignore_errors=True)
        self._announce(START, str(iteration))

    def wait_start(self) -> int:
        """A follower: the iteration rank 0 starts the cell at."""
        return int(self._wait(START))

    def published(self, iteration: int, batch: int) -> None:
        """Rank 0: collection ``batch`` (0, 1, ... within the iteration) of ``iteration`` is stored."""
        self._announce(f"collected-{iteration}-{batch}")

    def wait(self, iteration: int, batch: int) -> None:
        """A follower: block until rank 0 published that collection."""
        self._wait(f"collected-{iteration}-{batch}")

    def ended(self) -> None:
        """Rank 0: its work on this cell in this launch is over."""
        self._announce(ENDED)
