"""`spogw run` under a launcher (`accelerate launch` / `torchrun`): one cell trained on several GPUs.

Rank 0 runs the cell as one process would: it holds the run folder, collects, evaluates, writes the
store, tracks, and writes checkpoints and the report. Every rank joins each update step
(harness/distributed.py: each forwards its share of the step's sequences, gradients are summed,
every rank takes the same optimizer step). The other ranks ("followers") do no collection and no
evaluation: before each update they wait until rank 0 says that the rollouts it collected are in
the cell's shard, and read them from there (the same rows, in the same order, as rank 0's).

Why a file and not a collective for that wait: rank 0 may spend hours evaluating and collecting
between two updates, and a blocked collective (barrier, broadcast) times out long before (gloo's
and NCCL's default is 30 minutes). `CollectionSync` is a small file in the cell's folder that rank
0 rewrites atomically after each collection ("<token> <count>"); followers poll it. The token is
new in each launch (broadcast once at the start, when every rank is there), so a count left by a
killed launch is never taken for this one's.

The ranks of one cell share a machine: the shard is SQLite in WAL mode, which readers on other
hosts cannot share. Many cells at once across machines: `spogw run --ray` (harness/cluster.py).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from spogw.harness.atomic import atomic_write_text
from spogw.harness.distributed import Ranks

SYNC_FILE = ".collected"
POLL_S = 0.5
ENDED = "ended"


def launch_token(ranks: Ranks) -> str:
    """A token rank 0 draws and every rank receives (one broadcast; every rank must call it)."""
    token = secrets.token_hex(8) if ranks.main else ""
    if ranks.world == 1:
        return token
    import torch.distributed as dist

    shared = [token]
    dist.broadcast_object_list(shared, src=0)
    return str(shared[0])


@dataclass
class CollectionSync:
    """Rank 0 publishes each finished collection; a follower waits for the same one."""

    folder: Path
    token: str
    ranks: Ranks
    count: int = field(default=0)

    @property
    def path(self) -> Path:
        return self.folder / SYNC_FILE

    def published(self) -> None:
        """Rank 0: the collection just finished is in the store (nothing on a follower)."""
        self.count += 1
        if self.ranks.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, f"{self.token} {self.count}\n")

    def ended(self) -> None:
        """Rank 0: this cell's work in this launch is over (done, or stopped by an error)."""
        if self.ranks.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, f"{self.token} {ENDED}\n")

    def wait(self) -> None:
        """A follower: block until rank 0 published this collection (its count in this launch).
        Raises LaunchEnded when rank 0 ended the cell instead (the follower then stops too: an
        update step without rank 0 would wait for it forever)."""
        self.count += 1
        while True:
            try:
                token, count = self.path.read_text().split()
            except (FileNotFoundError, ValueError):
                token, count = "", "0"
            if token == self.token and count == ENDED:
                raise LaunchEnded(f"rank 0 ended the cell before collection {self.count} of this launch")
            if token == self.token and int(count) >= self.count:
                return
            time.sleep(POLL_S)


class LaunchEnded(RuntimeError):
    """Rank 0 ended the cell (done or failed) while a follower waited for a collection."""
