"""The Ray executor (`--executor ray`): the local executor's shard tasks, as plain Ray tasks.

The unit of work stays one planned chunk -> one output shard, and the task function is the very one
the local process pool runs (`distill.executor.run_shard`, or a stage's own): a Ray worker reads its
chunk, applies the pure batch function and writes and commits the shard with distill's writer (temporary
name, fsync, rename, SHA-256); the driver records finished shards in the manifest as they come back.
So the rows, their order and the resume semantics are those of the local executor: a rerun, with
either executor, redoes only the shards the manifest does not list.

Each task is one `ray.remote` call with one CPU, retried when its worker dies; the driver keeps twice
as many in flight as there are CPUs and takes results as they finish (`ray.wait`). Ray Data is not
needed: its readers and writers would bypass the shard commit protocol that makes a killed run
resumable without duplicates, and scheduling a list of tasks is what plain tasks do.

On a cluster, every node needs the same Python environment (distill installed, and any batch
function's file at the same path) and the output directory on a shared filesystem. `RAY_ADDRESS`
(or `ray start --address` on the node) picks the cluster; without one, a local Ray instance with
`--workers` CPUs is started for the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from distill.errors import UserError


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install ray (or distill's `ray` extra)") from None
    return ray


def init(workers: int | None) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local instance with `workers` CPUs."""
    ray = _ray()
    if not ray.is_initialized():
        local = not os.environ.get("RAY_ADDRESS")
        ray.init(
            num_cpus=(workers or os.cpu_count() or 1) if local else None,
            include_dashboard=False,
            log_to_driver=True,  # a worker's error message reaches the user's terminal
            logging_level=logging.WARNING,  # Ray's INFO lines would drown distill's progress and summary
            # distill's modules are imported by name on the workers; the driver's tree is the workers' tree
            runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
        )


def ray_map(fn: Callable[[Any], Any], tasks: list[Any], workers: int | None) -> Iterator[Any]:
    """Yield `fn(task)` for every task as it finishes, each task a Ray task with one CPU."""
    if not tasks:
        return
    ray = _ray()
    init(workers)
    remote = ray.remote(num_cpus=1, max_retries=3)(fn)  # a lost worker: its temporary file is discarded, rerun
    in_flight = 2 * (workers or int(ray.cluster_resources().get("CPU", 1)))  # busy CPUs, bounded driver memory
    todo, pending = list(reversed(tasks)), []
    try:
        while todo or pending:
            while todo and len(pending) < in_flight:
                pending.append(remote.remote(todo.pop()))
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        if isinstance(cause, UserError):
            raise UserError(str(cause).splitlines()[0]) from None
        raise RuntimeError(f"a Ray task failed: {str(e).splitlines()[0]}; rerun the same command to resume") from e
    finally:
        for ref in pending:  # stopped early (an error, Ctrl-C): the rest is not worth running
            ray.cancel(ref)
