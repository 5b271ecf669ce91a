"""The Ray executor (`--executor ray`): the local executor's shard tasks, scheduled by Ray Data.

The unit of work stays one planned chunk -> one output shard, and the task function is the very one
the local process pool runs (`distill.executor.run_shard`, or a stage's own): a Ray worker reads its
chunk, applies the pure batch function and writes and commits the shard with distill's writer (temporary
name, fsync, rename, SHA-256); the driver records finished shards in the manifest as they stream back.
So the rows, their order and the resume semantics are those of the local executor: a rerun, with
either executor, redoes only the shards the manifest does not list.

Ray Data is the scheduler here, not the reader/writer: `map_batches` over a dataset of task
descriptions (one per block, one per batch) gives streaming execution with backpressure, task retries
on worker loss and one CPU per task across the cluster. Its own `read_parquet` / `write_parquet`
would bypass the shard commit protocol that makes a killed run resumable without duplicates.

On a cluster, every node needs the same Python environment (distill installed, and any batch
function's file at the same path) and the output directory on a shared filesystem. `RAY_ADDRESS`
(or `ray start --address` on the node) picks the cluster; without one, a local Ray instance with
`--workers` CPUs is started for the run.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

from distill.errors import UserError


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray Data: pip install 'ray[data]' (or distill's `ray` extra)") from None
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
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # distill's own progress bar counts rows; Ray's would count tasks
    ctx.execution_options.preserve_order = False  # results stream back as they finish, like the pool's
    ctx.execution_options.verbose_progress = False


def _run_tasks(batch: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """One Ray Data batch of pickled tasks -> their pickled results."""
    return {"result": [pickle.dumps(fn(pickle.loads(blob))) for blob in batch["task"]]}


def ray_map(fn: Callable[[Any], Any], tasks: list[Any], workers: int | None) -> Iterator[Any]:
    """Yield `fn(task)` for every task as it finishes, each task a Ray task with one CPU."""
    if not tasks:
        return
    ray = _ray()
    init(workers)
    items = [{"task": pickle.dumps(t)} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    results = ds.map_batches(
        _run_tasks,
        fn_kwargs={"fn": fn},
        batch_size=1,
        batch_format="numpy",
        num_cpus=1,
        max_retries=3,  # a worker lost mid-shard: its temporary file is discarded and the task runs again
        concurrency=workers,
    )
    try:
        for row in results.iter_rows():
            yield pickle.loads(row["result"])
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        if isinstance(cause, UserError):
            raise UserError(str(cause).splitlines()[0]) from None
        raise RuntimeError(f"a Ray task failed: {str(e).splitlines()[0]}; rerun the same command to resume") from e
