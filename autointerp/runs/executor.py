"""`--ray auto|ADDRESS`: cache, explain and score spread over a Ray cluster.

This module knows no stage: a stage hands it units and a module-level function that builds the
work (runs/cache.py, interpret.py, studies.py, validity.py); `execute` runs them here or on Ray. The
driver (the process that ran the command) plans the work exactly as a single-process run does, and
hands out units: corpus parts for the cache, chunks of latents for explain, score and validate. Each
worker is a Ray actor that loads its own models once (one per GPU on a GPU cluster, else one per
node, using that node's CPUs) and takes one unit at a time.

What is written is what a single-process run writes. A cache worker writes its part's files and
then the part's .done marker, as the single-process loop does, so a part is either complete or
redone. Explain and score workers write nothing: they return a chunk's rows and the driver appends
them as one part per chunk. When a worker dies (kill -9, a lost node) its unit goes back to the
queue for the others, and a rerun skips everything already done; only when every worker is gone
does the command stop, with a one-line error.

The run folder must be on storage that every node sees at the same path (one machine, or a
shared file system).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
from typing import Any, Callable

from autointerp.core.errors import AutointerpError
from autointerp.core.faults import fault_point

log = logging.getLogger(__name__)

EXTRA = "pip install -e '.[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise AutointerpError(f"--ray needs Ray, which is an optional extra: {EXTRA}") from None
    return ray


def _check_reachable(address: str) -> None:
    """A plain TCP connect first: ray.init on an address nobody listens at retries for a minute."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise AutointerpError(f"--ray {address!r} is not an address: use auto or HOST:PORT of the cluster's head "
                              f"(`ray start --head` prints it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise AutointerpError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}): start one with "
                              f"`ray start --head` or check the address") from None


def connect(address: str):
    """The ray module, connected to the cluster at `address` ('auto' or HOST:PORT)."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AutointerpError(f"cannot connect to the Ray cluster at {address}: {first} (start one with "
                              f"`ray start --head`, or pass --ray HOST:PORT)") from None
    return ray


def worker_options(ray, device: str, max_workers: int = 0) -> list[dict]:
    """Ray actor options, one entry per worker: one per GPU when the cluster has GPUs and the
    device allows them, else one per node that has CPUs, pinned to it and using all of them."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    if gpus and device != "cpu":
        options = [{"num_gpus": 1, "num_cpus": 1} for _ in range(gpus)]
    else:
        options = [{"num_cpus": int(n["Resources"]["CPU"]),
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)}
                   for n in nodes if n["Resources"].get("CPU", 0) >= 1]
    if not options:
        raise AutointerpError("the Ray cluster has no node with a CPU or GPU to run workers on: start workers "
                              "with `ray start --address HEAD:PORT`")
    return options[:max_workers] if max_workers > 0 else options


def _cause(error: BaseException) -> str:
    """The first line of what went wrong inside a worker."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith(("Traceback", "  ", "ray::", "The actor")):
            return line.strip()
    return text.splitlines()[0] if text else type(cause).__name__


def run_pool(ray, actors: list, method: str, units: list, on_result: Callable[[Any, Any], None]) -> int:
    """Run actor.method(unit) for every unit, one unit per actor at a time; on_result(unit, result)
    on the driver as each finishes. A unit whose actor died is queued again for the others.
    Returns the number of workers lost."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

    queue, idle, running = collections.deque(units), list(actors), {}
    lost = 0
    while queue or running:
        while queue and idle:
            actor, unit = idle.pop(0), queue.popleft()
            running[getattr(actor, method).remote(unit)] = (actor, unit)
        [ref], _ = ray.wait(list(running), num_returns=1)
        actor, unit = running.pop(ref)
        try:
            result = ray.get(ref)
        except RayTaskError as e:  # the work itself failed: the same error a single process would raise
            if isinstance(e.cause, AutointerpError):
                raise e.cause from None
            raise AutointerpError(f"a Ray worker failed on {unit}: {_cause(e)}") from None
        except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
            lost += 1
            queue.appendleft(unit)
            log.warning("a Ray worker died (%s); its unit %s goes to another worker", _cause(e), unit)
            if not idle and not running:
                raise AutointerpError(f"every Ray worker died ({_cause(e)}); what finished is kept: rerun the same "
                                      f"command to do the rest") from None
            continue
        on_result(unit, result)
        idle.append(actor)
    return lost


# Environment a worker takes from the driver (not AUTOINTERP_FAULT: tests set that per node).
FORWARDED_ENV = ("AUTOINTERP_DATA", "AUTOINTERP_VLLM_PYTHON", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def driver_context() -> dict:
    """The driver's working folder and settings, so relative paths mean the same on a worker."""
    return {"cwd": os.getcwd(), "env": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}


def _enter(context: dict) -> None:
    os.environ.update(context["env"])
    if os.path.isdir(context["cwd"]):
        os.chdir(context["cwd"])


def start_workers(ray, cls, options: list[dict], *args) -> list:
    """One actor of cls per options entry, each constructed with (driver context, *args); waits
    until all are ready, so that a worker that cannot load its models is a one-line error before
    any work is sent."""
    remote = ray.remote(max_restarts=0, max_task_retries=0)(cls)
    context = driver_context()
    actors = [remote.options(**o).remote(context, *args) for o in options]
    try:
        ray.get([a.ready.remote() for a in actors])
    except Exception as e:  # noqa: BLE001 - RayActorError with the constructor's exception inside
        for a in actors:
            ray.kill(a)
        raise AutointerpError(f"a Ray worker could not start: {_cause(e)}") from None
    return actors


# -- one unit of work per call ---------------------------------------------------------------------


def chunks(items: list, size: int):
    """The units of a stage: its latents in chunks of `size`."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


class UnitWorker:
    """A Ray actor that builds its work once, `make_work(*args)` (a module-level function of the stage
    that asked, so Ray pickles it by name and this module never imports a stage), and runs one unit
    per call. The work may offer `state()`, which `ready` returns to the driver."""

    def __init__(self, context: dict, make_work: Callable[..., Callable], *args):
        _enter(context)
        self.work = make_work(*args)

    def ready(self):
        state = getattr(self.work, "state", None)
        return state() if state is not None else True

    def run(self, unit):
        out = self.work(*unit) if isinstance(unit, tuple) else self.work(unit)
        fault_point("worker-chunk-done")
        return out


def run_units(cfg, units: list, make_work: Callable[..., Callable], on_result: Callable[[Any, Any], None],
              *args) -> int:
    """Run units on Ray workers (cfg.ray, cfg.device, cfg.ray_workers), each built by
    make_work(cfg, *args); on_result(unit, rows) writes each unit's rows on the driver. Returns the
    workers lost."""
    ray = connect(cfg.ray)
    actors = start_workers(ray, UnitWorker, worker_options(ray, cfg.device, cfg.ray_workers)[:len(units)],
                           make_work, cfg, *args)
    log.info("%s: %d units on %d Ray workers", getattr(make_work, "__qualname__", make_work), len(units), len(actors))
    try:
        return run_pool(ray, actors, "run", units, on_result)
    finally:
        for a in actors:
            ray.kill(a)


def execute(cfg, units: list, make_work: Callable[..., Callable], on_result: Callable[[Any, Any], None], *args,
            local: dict | None = None) -> None:
    """The one loop every stage's units go through. The work is make_work(cfg, *args), built once:
    with cfg.ray on each Ray worker, else here with `local` added (the models and store the caller
    already holds, e.g. {"client": ..., "store": ...}), running the units in order.
    on_result(unit, rows) always runs in this process. No unit, no models loaded."""
    if not units:
        return
    if getattr(cfg, "ray", ""):
        run_units(cfg, units, make_work, on_result, *args)
        return
    work = make_work(cfg, *args, **(local or {}))
    for unit in units:
        on_result(unit, work(*unit) if isinstance(unit, tuple) else work(unit))
