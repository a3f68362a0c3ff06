"""Batched scoring without rewriting the scorers: lockstep execution of independent jobs.

Each job (scoring one latent's explanation with every scorer) is ordinary sequential code that
calls the LLM client. `run_lockstep` runs the jobs of a chunk of latents in threads, one at a time,
and hands each a proxy client. A job that calls the LLM parks its request; once every unfinished
job has parked one, the requests go to the real backend together, one call per kind of request,
and each job gets its own slice of the answer. So the backend sees the prompts of the whole chunk
at once: vLLM schedules and prefix-caches them, the transformers backend packs them into batches
that share prefixes (the instructions once for the chunk, each prompt's examples once).

Only one job runs Python at a time (a job holds the turn until it parks or ends): the store's
DuckDB connection and the embedder are never used concurrently, and requests are combined in job
order, so a chunk's batches are the same on every run.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# method -> (arguments holding one entry per prompt, concatenated across jobs)
BATCHED: dict[str, tuple[str, ...]] = {
    "generate": ("prompts",),
    "answer_probs": ("prompts", "assistant_prefixes"),
    "token_losses": ("prompts", "texts"),
    "positional_probs": ("items",),
}


@dataclass
class _Request:
    job: int
    method: str
    lists: dict[str, list]  # the per-prompt arguments
    rest: dict[str, Any]  # everything else: requests combine only when these are equal
    result: list | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def key(self) -> tuple:
        return self.method, tuple(sorted((k, repr(v)) for k, v in self.rest.items()))


class _Lockstep:
    def __init__(self, client, n_jobs: int):
        self.client = client
        self.turn = threading.Lock()
        self.live = n_jobs
        self.parked: dict[int, _Request] = {}

    def request(self, job: int, method: str, args: tuple, kwargs: dict) -> list:
        """Called by a job holding the turn."""
        bound = inspect.signature(getattr(self.client, method)).bind(*args, **kwargs)
        bound.apply_defaults()
        params = dict(bound.arguments)
        size = len(params[BATCHED[method][0]])
        lists = {k: params.pop(k) for k in BATCHED[method] if k in params}
        lists = {k: (list(v) if v is not None else None) for k, v in lists.items()}
        req = _Request(job, method, lists, params)
        if any(v is None for v in lists.values()):
            # an optional per-prompt argument left out (answer_probs' assistant prefixes): its default
            # for each prompt, so that requests with and without it combine
            req.lists = {k: (v if v is not None else [""] * size) for k, v in lists.items()}
        self.parked[job] = req
        if len(self.parked) == self.live:
            self._dispatch()
        else:
            self.turn.release()
            req.done.wait()
            self.turn.acquire()
        if req.error is not None:
            raise req.error
        return req.result

    def finish(self) -> None:
        """A job ended (holding the turn): the others may now all be parked."""
        self.live -= 1
        if self.parked and len(self.parked) == self.live:
            self._dispatch()

    def _dispatch(self) -> None:
        parked, self.parked = [self.parked[j] for j in sorted(self.parked)], {}
        groups: dict[tuple, list[_Request]] = {}
        for req in parked:
            groups.setdefault(req.key(), []).append(req)
        for reqs in groups.values():
            first = reqs[0]
            lists = {k: [x for r in reqs for x in r.lists[k]] for k in first.lists}
            try:
                out = getattr(self.client, first.method)(**lists, **first.rest)
                at = 0
                for r in reqs:
                    n = len(next(iter(r.lists.values())))
                    r.result, at = out[at:at + n], at + n
            except BaseException as e:  # noqa: BLE001 - every job in the batch sees the backend's error
                for r in reqs:
                    r.error = e
        for req in parked:
            req.done.set()


class LockstepClient:
    """What a job sees: the real client, except that batched methods go through the lockstep."""

    def __init__(self, lockstep: _Lockstep, job: int):
        self._lockstep, self._job = lockstep, job

    def __getattr__(self, name: str):
        attr = getattr(self._lockstep.client, name)
        if name not in BATCHED or not callable(attr):
            return attr
        return lambda *args, **kwargs: self._lockstep.request(self._job, name, args, kwargs)


def run_lockstep(client, jobs: list[Callable[[Any], T]]) -> list[T]:
    """Results of job(client) for each job, their LLM calls batched across jobs. The first job error
    (in job order) is raised once every job has ended. Without a client, with one job, or with a
    client whose `combines_latents` is False, the jobs simply run in order."""
    if client is None or len(jobs) <= 1 or not getattr(client, "combines_latents", True):
        return [job(client) for job in jobs]
    lockstep = _Lockstep(client, len(jobs))
    results: list = [None] * len(jobs)
    errors: list[BaseException | None] = [None] * len(jobs)

    def work(i: int) -> None:
        with lockstep.turn:
            try:
                results[i] = jobs[i](LockstepClient(lockstep, i))
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                errors[i] = e
            finally:
                lockstep.finish()

    threads = [threading.Thread(target=work, args=(i,), name=f"lockstep-{i}", daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results
