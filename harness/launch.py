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

With the base model sharded (`generator.training.sharding: fsdp`, harness/sharding.py) every
forward is a collective, also the ones rank 0 runs alone while collecting and evaluating: rank 0
counts them in ``forwards`` before each starts, and a follower, while it waits for any event, runs
one mirror forward for each it has not run yet (polling every few milliseconds while they come).
A follower then also stays until rank 0 ends the cell (its final evaluations forward too).

The ranks of one cell share a machine: the shard is SQLite in WAL mode, which readers on other
hosts cannot share. Many cells at once across machines: `spogw run --ray` (harness/cluster.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spogw.harness.atomic import atomic_write_text
from spogw.harness.distributed import Ranks

SYNC_DIR = ".sync"
POLL_S = 0.5
BURST_POLL_S = 0.002
"""A follower's poll while rank 0's lone forwards come (one per rollout of a served collection):
each waits for the follower's mirror, so a 0.5 s poll would add 0.5 s to every one."""
BURST_S = 2.0
START, ENDED, FORWARDS = "start", "ended", "forwards"


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


@dataclass
class CollectionSync:
    """Rank 0 announces; a follower waits for the announcement it needs."""

    folder: Path
    """The cell's folder (harness/cells.py)."""
    token: str
    ranks: Ranks
    mirror: Callable[[], None] | None = None
    """A follower of a sharded model (harness/sharding.py): its forward for each of rank 0's lone
    forwards, run while it waits. None: the model is not sharded (nothing to mirror)."""
    _mirrored: int = field(default=0, repr=False)
    _last_mirror: float = field(default=0.0, repr=False)

    @property
    def events(self) -> Path:
        return self.folder / SYNC_DIR / self.token

    def _announce(self, name: str, text: str = "") -> None:
        if self.ranks.main:
            self.events.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.events / name, text + "\n")

    def announce_forward(self, count: int) -> None:
        """Rank 0: its lone forward number ``count`` starts (harness/sharding.py LoneForwards). Not
        fsynced: it is read within milliseconds, and a killed launch's token is never read again."""
        self.events.mkdir(parents=True, exist_ok=True)
        temporary = self.events / f".{FORWARDS}.{os.getpid()}"
        temporary.write_text(f"{count}\n")
        os.replace(temporary, self.events / FORWARDS)

    def _mirror_pending(self) -> bool:
        """A follower: run a mirror forward for each lone forward of rank 0 not mirrored yet; whether
        one ran."""
        if self.mirror is None:
            return False
        try:
            started = int((self.events / FORWARDS).read_text())
        except (FileNotFoundError, ValueError):
            return False
        for _ in range(started - self._mirrored):
            self.mirror()
            self._mirrored += 1
            self._last_mirror = time.monotonic()
        return started > 0 and time.monotonic() - self._last_mirror < BURST_S

    def _wait(self, name: str) -> str:
        """A follower: the text of event ``name`` once rank 0 wrote it, mirroring rank 0's lone
        forwards meanwhile. Raises LaunchEnded when rank 0 ended the cell first (an update step
        without rank 0 would wait for it forever). Rank 0 writes an event only after its earlier
        lone forwards ended, and those needed this rank's mirror: so when the event is there, no
        forward announced before it is left to mirror."""
        while True:
            burst = self._mirror_pending()
            if (self.events / name).is_file():
                return (self.events / name).read_text().strip()
            if (self.events / ENDED).is_file():
                raise LaunchEnded(f"rank 0 ended the cell before {name!r} ({self.events})")
            time.sleep(BURST_POLL_S if burst else POLL_S)

    def mirror_until_ended(self) -> None:
        """A follower of a sharded model after its last update: mirror rank 0's lone forwards (its
        final evaluations) until rank 0 ends the cell."""
        try:
            self._wait(f"never-{self.token}")
        except LaunchEnded:
            return

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
