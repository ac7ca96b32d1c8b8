"""Where a rank stands in the world, the collectives training needs, and ranks started here.

A train step of ``nodes x procs_per_node`` ranks either *is* one rank (started by torchrun
or a Kubeflow TrainJob, :meth:`World.from_env`) or starts them all on this machine
(:func:`spawn`: ``torch.multiprocessing`` spawn, a free port, each rank killed with its
parent, the first rank's error re-raised as the same kfbatch error class).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from components.errors import DataError, ParamError

__all__ = ["World", "all_gather", "all_reduce_sum", "barrier", "process_group", "spawn"]

log = logging.getLogger(__name__)

#: The file a spawned rank 0 writes its result to, in the spawn's private folder.
_RESULT_FILE = "result.json"


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one training run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes files."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """The place torchrun (or a TrainJob) gives this process in ``RANK``, ``WORLD_SIZE``
        and ``LOCAL_RANK``."""
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", 0)),
        )


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the ranks' process group (gloo on CPU, nccl on CUDA) unless alone or already in
    one; leave it on exit if this joined it."""
    joined = world.size > 1 and not dist.is_initialized()
    if joined:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)
    try:
        yield
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def all_gather(obj: Any, world: World) -> list[Any]:
    """``obj`` of every rank, in rank order."""
    if world.size == 1:
        return [obj]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place."""
    if world.size > 1:
        dist.all_reduce(tensor)  # gloo and nccl both sum float64 on the default device
    return tensor


def barrier(world: World) -> None:
    """Wait for every rank."""
    if world.size > 1:
        dist.barrier()


def spawn(entry: Callable[..., Any], args: tuple[Any, ...], size: int) -> Any:
    """Run ``entry(world, *args, result_path=...)`` on ``size`` ranks here; rank 0's result.

    ``entry`` must be a module-level function (ranks are spawned, so it is pickled by name);
    rank 0 writes its JSON result to ``result_path``.

    Raises:
        DataError, ParamError: the first failed rank's error, when it was one.
        RuntimeError: a rank failed otherwise, or died.
    """
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    with tempfile.TemporaryDirectory(prefix="kfbatch-train-") as tmp:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
        log.info("starting %d ranks on this machine (port %s)", size, env["MASTER_PORT"])
        try:
            mp.start_processes(
                _spawned,
                args=(size, entry, args, env, tmp, os.getpid()),
                nprocs=size,
                start_method="spawn",
                join=True,
            )
        except ProcessException as error:
            raise _rank_error(tmp, error) from None
        with open(os.path.join(tmp, _RESULT_FILE), encoding="utf-8") as f:
            return json.load(f)


def _spawned(
    rank: int,
    size: int,
    entry: Callable[..., Any],
    args: tuple[Any, ...],
    env: dict[str, str],
    tmp: str,
    parent: int,
) -> None:
    """A rank started by :func:`spawn`: logs tagged with its rank, its error kept for the
    parent."""
    os.environ.update(env)
    _exit_with(parent)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s rank {rank} %(name)s: %(message)s"
    )
    if rank != 0:
        logging.getLogger("components").setLevel(logging.WARNING)
    try:
        entry(World(rank, size, rank), *args, result_path=os.path.join(tmp, _RESULT_FILE))
    except Exception as error:
        with open(os.path.join(tmp, f"error-{rank}.json"), "w", encoding="utf-8") as f:
            json.dump({"type": type(error).__name__, "message": str(error)}, f)
        raise


def _rank_error(tmp: str, error: Exception) -> Exception:
    """The first rank error, as the same kfbatch error class when it was one."""
    classes = {cls.__name__: cls for cls in (DataError, ParamError)}
    for name in sorted(os.listdir(tmp)):
        if name.startswith("error-"):
            with open(os.path.join(tmp, name), encoding="utf-8") as f:
                found = json.load(f)
            cls = classes.get(found["type"])
            rank = name[len("error-") : -len(".json")]
            if cls is not None:
                return cls(found["message"])
            return RuntimeError(f"training rank {rank} failed: {found['type']}: {found['message']}")
    return RuntimeError(f"a training rank died: {' '.join(str(error).split())}")


def _exit_with(parent: int, interval_s: float = 0.5) -> None:
    """Kill this rank when the process that started it is gone (even by SIGKILL).

    On Linux the kernel does it (``PR_SET_PDEATHSIG``), which also works while this rank is
    blocked inside a collective that holds the GIL; elsewhere a watchdog thread polls.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the call above
                os.kill(os.getpid(), signal.SIGKILL)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="kfbatch-rank-watch", daemon=True).start()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
