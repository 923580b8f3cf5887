"""The Ray backend of the indexer: one task per case on a pool of actors, engines per actor.

Each actor is a `CaseIndexer` holding its engines for every case it is given (one engine
load per worker, not per case); Ray's `ActorPool` hands the cases out as actors come free.
An actor reserves one CPU and, where an engine runs on CUDA, one GPU (or
``gpus_per_worker``), so Ray places workers by the cluster's free GPUs. Outcomes come back
to the driver, which writes them to the library. Ray is imported here only, on use.

Workers must see the cases, the weights and the cache folder at the same paths as the
driver (shared storage), and run the same SurgAgent.

    for outcome in ray_outcomes(tasks, config, workers=8, address="ray://head:10001"): ...
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from surgagent.indexing.types import CaseOutcome, CaseTask, IndexConfig
from surgagent.indexing.worker import CaseIndexer
from surgagent.tools.errors import BackendError, ConfigError, SurgAgentError

__all__ = ["ray_outcomes"]

log = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            'the ray backend needs Ray: pip install "surgagent[cluster]" (or use --backend local).'
        ) from exc
    return ray


def _start(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start a local instance; True if started."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        options.update(num_cpus=os.cpu_count() or 1, include_dashboard=False)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendError(
            f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} "
            f"({exc}); check the address (ray://HEAD:10001) and that the cluster is up."
        ) from exc
    return True


def _one_gpu_each(config: IndexConfig) -> IndexConfig:
    """Engines on ``cuda`` inside an actor: Ray shows each actor only the GPU it reserved."""
    update: dict[str, Any] = {}
    for name in ("detector", "phase"):
        job = getattr(config, name)
        if job is not None and re.fullmatch(r"cuda(:\d+)?", job.device):
            update[name] = job.model_copy(update={"device": "cuda"})
    return config.model_copy(update=update)


def ray_outcomes(
    tasks: Sequence[CaseTask],
    config: IndexConfig,
    *,
    workers: int,
    address: str | None = None,
    gpus_per_worker: float | None = None,
) -> Iterator[CaseOutcome]:
    """Index ``tasks`` on Ray, ``workers`` actors at once; yield outcomes as they finish.

    Raises:
        ConfigError: If Ray is not installed, or the engines cannot be loaded.
        BackendError: If the cluster cannot be reached, or a worker dies.
    """
    ray = _import_ray()
    from ray.util import ActorPool

    gpus = gpus_per_worker if gpus_per_worker is not None else float(config.uses_cuda())
    if gpus:
        config = _one_gpu_each(config)
    started = _start(ray, address)
    actors: list[Any] = []
    try:
        worker_class = ray.remote(num_cpus=1, num_gpus=gpus)(CaseIndexer)
        actors = [worker_class.remote(config) for _ in range(min(workers, len(tasks)))]
        pool = ActorPool(actors)
        try:
            yield from pool.map_unordered(lambda actor, task: actor.index.remote(task), tasks)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, SurgAgentError):
                raise cause from None
            raise
        except ray.exceptions.RayError as error:
            raise BackendError(
                f"a Ray worker failed while indexing ({type(error).__name__}: {error}); "
                "run the same command again to go on from where it stopped."
            ) from error
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
