"""Run a growing graph of copy tasks on `jobs` threads, keeping every worker busy.

The copy knows which work follows which (a table's data, then its indexes, then its
ANALYZE...); this module only decides *when* each ready task runs, on a
`concurrent.futures.ThreadPoolExecutor`:

- the ready task with the highest `priority` that does not conflict with a running task
  goes first (ties: the order tasks became ready). An exclusive task (ALTER TABLE ... ADD
  PRIMARY KEY, FOREIGN KEY) never runs beside another task on one of its tables: it would
  only wait on the lock, holding a worker, or deadlock;
- `after(task)`, called when a task finishes, returns the tasks it made ready;
- the first failure stops the rest: nothing new starts, `stop()` is called (it kills the
  running tasks' processes) and the failure is raised once every worker has returned;
- every task's ready/start/end time is recorded (`TaskTiming`), and `critical_path` reads
  back the chain that ended last: where the copy's time went.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("render_rotator.postgres")

# How often the dispatcher wakes up to check the deadline while every worker is busy.
POLL_SECONDS = 0.25


class TaskKind(enum.StrEnum):
    """What a task does; the value is what the bench and the JSON report print."""

    DATA = "data"  # one table, or one ctid range of it
    BATCH = "batch"  # many small tables through one session pair
    INDEX = "index"  # one index or primary/unique key of a loaded table
    BATCH_INDEX = "batch-index"  # the indexes of a batch's tables
    ANALYZE = "analyze"
    FOREIGN_KEY = "foreign-key"
    BLOBS = "blobs"  # large objects, one part of them
    BLOBS_META = "blobs-meta"  # large objects' comments, once every part is in


@dataclass
class Task:
    """A unit of work. `run` returns True when the work it stands for is complete (a table
    split into ranges is complete with its last range): only then does `after` see it."""

    kind: TaskKind
    label: str
    priority: float
    run: Callable[[], bool]
    # The tables (any hashable ids) the task works on, for the exclusive rule above.
    locks: tuple[int, ...] = ()
    exclusive: bool = False
    tables: tuple[Any, ...] = ()  # what `after` needs to know of the task's subject
    cost: float = 0.0  # estimated work, in the unit the caller's priorities use
    parallel: int = 0  # server-side parallel workers granted when picked (see `grant`)
    # filled in by the scheduler
    seq: int = 0
    parent: str | None = None  # the task whose completion made this one ready
    ready_at: float = 0.0
    blocked_by: str | None = None  # the last task to end while this one waited


@dataclass(frozen=True)
class TaskTiming:
    """When a copy task became ready, started and ended (seconds from the copy's start)."""

    kind: str
    label: str
    ready: float
    began: float
    ended: float
    parent: str | None
    parallel: int = 0  # server-side parallel workers the task was granted
    blocked_by: str | None = None  # the task whose end let it start, when it had to wait

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "ready": round(self.ready, 3),
            "began": round(self.began, 3),
            "ended": round(self.ended, 3),
            "parent": self.parent,
            "parallel": self.parallel,
            "blocked_by": self.blocked_by,
        }


def critical_path(timeline: Sequence[TaskTiming]) -> list[TaskTiming]:
    """The chain of tasks ending with the last to finish, each made ready by the one before.

    Between two links, `began - ready` is time spent waiting for a free worker; the rest of
    a link is its own work: where the copy's time went.
    """
    if not timeline:
        return []
    by_label = {t.label: t for t in timeline}
    chain = [max(timeline, key=lambda t: t.ended)]
    while chain[-1].parent is not None and chain[-1].parent in by_label:
        chain.append(by_label[chain[-1].parent])
    return list(reversed(chain))


After = Callable[[Task], Iterable[Task]]
Grant = Callable[[Task, Sequence[Task], int], None]


class Scheduler:
    """One run of a task graph. Not reusable: make one per copy."""

    def __init__(
        self,
        jobs: int,
        *,
        stop: Callable[[], None] = lambda: None,
        deadline: float | None = None,
        timeout_error: Callable[[], BaseException] | None = None,
        echoes: tuple[type[BaseException], ...] = (),
        grant: Grant | None = None,
        clock: Callable[[], float] = time.monotonic,
        origin: float | None = None,
    ) -> None:
        """`stop` kills running work after a failure; past `deadline` (on `clock`) the run
        fails with `timeout_error()`; `echoes` are the exceptions a task raises only because
        `stop` killed it (raised only if nothing else failed); `grant(task, waiting, jobs)`
        may adjust a task as it is picked; timings count from `origin`."""
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.jobs = jobs
        self._stop = stop
        self._deadline = deadline
        self._timeout_error = timeout_error
        self._echoes = echoes
        self._grant = grant
        self._clock = clock
        self._origin = clock() if origin is None else origin
        self.timeline: list[TaskTiming] = []
        self._ready: list[Task] = []
        self._running: dict[Future[tuple[bool, float, float]], Task] = {}
        self._seq = 0
        self._failures: list[BaseException] = []

    # -- the public entry -------------------------------------------------------------------

    def run(self, tasks: Iterable[Task], after: After) -> list[TaskTiming]:
        """Run `tasks` and everything `after` adds; returns the timeline, in start order.

        Raises the first failure (after stopping and waiting for the rest).
        """
        self._add(tasks, parent=None, now=self._clock())
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="copy-worker") as pool:
            try:
                self._dispatch(pool, after)
            except BaseException as exc:  # KeyboardInterrupt in the dispatcher, a bug in after
                self._fail(exc)
                self._drain()
        if self._failures:
            real = [f for f in self._failures if not isinstance(f, self._echoes)]
            raise (real or self._failures)[0]
        return sorted(self.timeline, key=lambda t: t.began)

    # -- internals --------------------------------------------------------------------------

    def _add(self, tasks: Iterable[Task], *, parent: str | None, now: float) -> None:
        for task in tasks:
            task.seq = self._seq
            self._seq += 1
            task.parent = parent
            task.ready_at = now
            self._ready.append(task)

    def _compatible(self, task: Task) -> bool:
        mine = set(task.locks)
        return not any(
            (task.exclusive or other.exclusive) and mine.intersection(other.locks)
            for other in self._running.values()
        )

    def _pick(self) -> Task | None:
        self._ready.sort(key=lambda t: (-t.priority, t.seq))
        for i, task in enumerate(self._ready):
            if self._compatible(task):
                del self._ready[i]
                if self._grant is not None:
                    self._grant(task, self._ready, self.jobs)
                return task
        return None

    def _execute(self, task: Task) -> tuple[bool, float, float]:
        began = self._clock()
        finished = task.run()
        return finished, began, self._clock()

    def _dispatch(self, pool: ThreadPoolExecutor, after: After) -> None:
        while True:
            while not self._failures and len(self._running) < self.jobs:
                task = self._pick()
                if task is None:
                    break
                self._running[pool.submit(self._execute, task)] = task
            if not self._running:  # with nothing running, every ready task was compatible
                return
            done, _ = wait(self._running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                self._finish(future, after)
            self._check_deadline()

    def _finish(self, future: Future[tuple[bool, float, float]], after: After) -> None:
        task = self._running.pop(future)
        exc = future.exception()
        if exc is not None:
            self._fail(exc)
            return
        finished, began, ended = future.result()
        self.timeline.append(
            TaskTiming(
                str(task.kind),
                task.label,
                task.ready_at - self._origin,
                began - self._origin,
                ended - self._origin,
                task.parent,
                task.parallel,
                task.blocked_by,
            )
        )
        log.debug(
            "task %s done: %.2fs-%.2fs", task.label, began - self._origin, ended - self._origin
        )
        for waiting in self._ready:  # the last task whose end each waiting task saw
            if waiting.ready_at < ended:
                waiting.blocked_by = task.label
        if finished and not self._failures:
            self._add(after(task), parent=task.label, now=ended)

    def _check_deadline(self) -> None:
        if self._deadline is None or self._failures or self._clock() <= self._deadline:
            return
        error = self._timeout_error() if self._timeout_error else TimeoutError("deadline passed")
        self._fail(error)

    def _fail(self, exc: BaseException) -> None:
        first = not self._failures
        if not isinstance(exc, self._echoes) or first:
            self._failures.append(exc)
        if first:
            self._stop()

    def _drain(self) -> None:
        """After a failure: wait for the running tasks (`stop` has killed their work)."""
        while self._running:
            done, _ = wait(self._running, return_when=FIRST_COMPLETED)
            for future in done:
                task = self._running.pop(future)
                exc = future.exception()
                if exc is not None:
                    self._fail(exc)
                else:
                    log.debug("task %s finished after the failure", task.label)
