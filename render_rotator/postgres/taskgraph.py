"""Which copy task follows which, and which of the ready ones matters most.

A table's data, then its indexes and keys, then its ANALYZE, then the foreign keys
between tables that are both ready; large objects in parts, then their comments. The
work itself is done by a `CopyWork` (the copy's workers); `postgres/scheduler.py` runs
the tasks.

Priorities order the ready tasks: index builds first, the costliest first (a long GIN
build must start as soon as its table is loaded), then foreign keys and ANALYZE, then data
by the work it leads to (`CopyTasks.data_priority`: a big table's rows and index builds, a
batch of small tables' likewise, so the longest chains start first and the cheap ones fill
the gaps at the end), large objects last.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from render_rotator.postgres.archive import PG_CONSTRAINT, TocEntry
from render_rotator.postgres.catalog import Constraint, SourceCatalog, SourceTable
from render_rotator.postgres.planning import (
    Chunk,
    index_oid,
    large_object_parts,
    load_costs,
    table_cost,
)
from render_rotator.postgres.scheduler import Task, TaskKind

# An index build this large (weighted source size) that outweighs all other waiting work is
# the copy's long pole: it gets the server's parallel maintenance workers. PostgreSQL 18
# builds GIN indexes in parallel too (measured here on a 0.2 GB jsonb_ops GIN: 15.6 s with
# no worker, 8.7 s with one, 5.2 s with two).
PARALLEL_BUILD_MIN_COST = 32 * 1024 * 1024


class CopyWork(Protocol):
    """What each kind of task does; the copy's workers implement it."""

    def copy_chunk(self, chunk: Chunk) -> int: ...

    def copy_batch(self, tables: list[SourceTable]) -> list[int]: ...

    def table_loaded(self, table: SourceTable, rows: int) -> bool:
        """Count a finished chunk; True when it was the table's last one."""
        ...

    def build(
        self, entries: Sequence[TocEntry], what: str, parallel: int = 0, cost: int = 0
    ) -> None: ...

    def rows_final(self, tables: Sequence[SourceTable]) -> None:
        """Tables loaded, and no build that locks them exclusively waits for them."""
        ...

    def analyze(self, tables: Sequence[SourceTable]) -> None: ...

    def copy_large_objects(self, part: int, parts: int) -> int: ...

    def copy_large_object_comments(self) -> None: ...


def grant_parallel(task: Task, waiting: Sequence[Task], jobs: int) -> None:
    """Give the long pole the other workers' share of the server when nothing else needs it."""
    if task.kind != TaskKind.INDEX or jobs < 2 or task.cost < PARALLEL_BUILD_MIN_COST:
        return
    if task.cost >= sum(t.cost for t in waiting):
        task.parallel = jobs - 1


class CopyTasks:
    """The copy's task graph: `initial()` tasks, and `after(task)` the ones each makes ready."""

    INDEX, FOREIGN_KEY, ANALYZE, DATA, BLOBS = 10_000.0, 8_000.0, 5_000.0, 1_000.0, 0.0
    DATA_SPAN = 3_000.0  # data priorities stay between DATA and ANALYZE, however many tables

    @classmethod
    def data_priority(cls, cost: float, longest: float) -> float:
        """A data task (a table, a range of one, a batch of small tables) ranks by the work
        its start leads to (rows plus the index builds that follow), the costliest first:
        the longest chains start early and the cheap ones fill the workers' gaps at the end.
        A batch of small tables ranks by its own cost among the big tables, not after them.
        Ties (the ranges of one table) keep their order."""
        return cls.DATA + cls.DATA_SPAN * min(1.0, cost / longest)

    def __init__(
        self,
        work: CopyWork,
        plan: SourceCatalog,
        early: dict[int, list[TocEntry]],
        foreign_keys: list[tuple[TocEntry, Constraint]],
        *,
        jobs: int,
    ) -> None:
        self.work = work
        self.jobs = jobs
        self.plan = plan
        self.early = early
        self._lock = threading.Lock()
        self._pending_indexes: dict[int, int] = {}
        self._ready: set[int] = set()
        self._final: set[int] = set()  # tables handed to work.rows_final
        self._waiting_fks = list(foreign_keys)
        self._pending_blobs = 0

    def initial(self, chunks: list[Chunk], batches: list[list[SourceTable]]) -> list[Task]:
        """Data tasks, costliest work first (see `data_priority`)."""
        costs = load_costs(self.plan.tables, self.plan.constraints)
        batch_costs = [sum(table_cost(t) for t in batch) for batch in batches]
        longest = max([*costs.values(), *batch_costs, 1.0])
        tasks: list[Task] = []
        for chunk in chunks:
            tasks.append(
                Task(
                    TaskKind.DATA,
                    chunk.label,
                    priority=self.data_priority(costs[chunk.table.oid], longest),
                    run=self._chunk_runner(chunk),
                    locks=(chunk.table.oid,),
                    tables=(chunk.table,),
                    cost=chunk.table.size // max(1, chunk.parts),
                )
            )
        for batch, cost in zip(batches, batch_costs, strict=True):
            tasks.append(
                Task(
                    TaskKind.BATCH,
                    f"{len(batch)} small tables",
                    priority=self.data_priority(cost, longest),
                    run=self._batch_runner(batch),
                    locks=tuple(t.oid for t in batch),
                    tables=tuple(batch),
                    cost=sum(t.size for t in batch),
                )
            )
        parts = large_object_parts(self.jobs, self.plan.large_objects)
        self._pending_blobs = parts
        for part in range(parts):
            label = "large objects" if parts == 1 else f"large objects (part {part + 1}/{parts})"
            tasks.append(
                Task(TaskKind.BLOBS, label, self.BLOBS, run=self._blobs_runner(part, parts))
            )
        return tasks

    def after(self, task: Task) -> list[Task]:
        """The tasks that `task` (just finished) makes ready."""
        if task.kind == TaskKind.DATA:
            return self._after_data(task.tables[0])
        if task.kind == TaskKind.INDEX:
            table = task.tables[0]
            with self._lock:
                self._pending_indexes[table.oid] -= 1
                last = self._pending_indexes[table.oid] == 0
            return self._analyze(task.tables) if last else []
        if task.kind == TaskKind.BATCH:
            entries = [e for t in task.tables for e in self.early.get(t.oid, [])]
            if not entries:
                return self._analyze(task.tables)
            label = f"indexes of {len(task.tables)} small tables"
            return [
                Task(
                    TaskKind.BATCH_INDEX,
                    label,
                    priority=self.INDEX,
                    run=self._build_runner(entries, label),
                    locks=tuple(t.oid for t in task.tables),
                    tables=task.tables,
                    exclusive=True,
                )
            ]
        if task.kind == TaskKind.BATCH_INDEX:
            return self._analyze(task.tables)
        if task.kind == TaskKind.BLOBS:
            with self._lock:
                self._pending_blobs -= 1
                last = self._pending_blobs == 0
            if not last:
                return []
            return [
                Task(
                    TaskKind.BLOBS_META,
                    "large object comments",
                    self.BLOBS,
                    run=self._comments_runner(),
                )
            ]
        if task.kind == TaskKind.ANALYZE:
            return self._tables_ready(task.tables)
        return []

    def _after_data(self, table: SourceTable) -> list[Task]:
        """A loaded table: each of its indexes and keys, as separate builds."""
        entries = self.early.get(table.oid, [])
        if not entries:
            return self._analyze((table,))
        with self._lock:
            self._pending_indexes[table.oid] = len(entries)
        if any(entry.catalog != PG_CONSTRAINT for entry in entries):
            # its keys (ALTER TABLE, exclusive) wait for its CREATE INDEX builds anyway: the
            # verification's read (a shared lock) runs beside those and delays nothing
            self._rows_final((table,))
        return [self._index_task(table, entry) for entry in entries]

    def _rows_final(self, tables: Sequence[SourceTable]) -> None:
        with self._lock:
            todo = [t for t in tables if t.oid not in self._final]
            self._final.update(t.oid for t in todo)
        if todo:
            self.work.rows_final(todo)

    def _index_task(self, table: SourceTable, entry: TocEntry) -> Task:
        cost = self.plan.index_cost.get(index_oid(entry, self.plan), 0)

        def run() -> bool:  # `parallel` is granted when the scheduler picks the task
            self.work.build(
                [entry], f"building {entry.desc}", parallel=build.parallel, cost=int(cost)
            )
            return True

        build = Task(
            TaskKind.INDEX,
            entry.desc,
            priority=self.INDEX + cost / 1e6,
            run=run,
            locks=(table.oid,),
            tables=(table,),
            exclusive=entry.catalog == PG_CONSTRAINT,
            cost=cost,
        )
        return build

    def _analyze(self, tables: Sequence[SourceTable]) -> list[Task]:
        self._rows_final(tables)  # a table with keys only: summed once they are built
        # Inheritance parents wait for the final ANALYZE, when their children are loaded.
        parents = [t for t in tables if t.has_children]
        todo = tuple(t for t in tables if not t.has_children)
        tasks = self._tables_ready(parents)
        if todo:
            label = todo[0].label if len(todo) == 1 else f"{len(todo)} small tables"
            tasks.append(
                Task(
                    TaskKind.ANALYZE,
                    f"ANALYZE {label}",
                    priority=self.ANALYZE,
                    run=self._analyze_runner(todo),
                    locks=tuple(t.oid for t in todo),
                    tables=todo,
                )
            )
        return tasks

    def _tables_ready(self, tables: Sequence[SourceTable]) -> list[Task]:
        """Tables loaded, indexed and analyzed: their foreign keys can be validated now."""
        if not tables:
            return []
        tasks = []
        with self._lock:
            self._ready.update(t.oid for t in tables)
            waiting = []
            for entry, fk in self._waiting_fks:
                if fk.table in self._ready and fk.referenced in self._ready:
                    tasks.append(
                        Task(
                            TaskKind.FOREIGN_KEY,
                            entry.desc,
                            priority=self.FOREIGN_KEY,
                            run=self._build_runner([entry], entry.desc),
                            locks=(fk.table, fk.referenced),
                            exclusive=True,
                        )
                    )
                else:
                    waiting.append((entry, fk))
            self._waiting_fks = waiting
        return tasks

    # -- what each task runs ------------------------------------------------------------------

    def _chunk_runner(self, chunk: Chunk) -> Callable[[], bool]:
        return lambda: self.work.table_loaded(chunk.table, self.work.copy_chunk(chunk))

    def _batch_runner(self, batch: list[SourceTable]) -> Callable[[], bool]:
        def run() -> bool:
            rows = self.work.copy_batch(batch)
            for table, n in zip(batch, rows, strict=True):
                self.work.table_loaded(table, n)
            return True

        return run

    def _build_runner(self, entries: Sequence[TocEntry], label: str) -> Callable[[], bool]:
        def run() -> bool:
            self.work.build(entries, f"building {label}")
            return True

        return run

    def _analyze_runner(self, tables: Sequence[SourceTable]) -> Callable[[], bool]:
        def run() -> bool:
            self.work.analyze(tables)
            return True

        return run

    def _blobs_runner(self, part: int, parts: int) -> Callable[[], bool]:
        def run() -> bool:
            self.work.copy_large_objects(part, parts)
            return True

        return run

    def _comments_runner(self) -> Callable[[], bool]:
        def run() -> bool:
            self.work.copy_large_object_comments()
            return True

        return run
