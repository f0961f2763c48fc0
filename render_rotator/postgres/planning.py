"""How the copy's work is cut up, before any of it runs.

- `load_order`: costliest tables first, a table referenced by a foreign key right after
  the costliest table referencing it;
- `plan_chunks`: big tables as one stream or several ctid ranges, small ones grouped into
  batches that share a session pair;
- `large_object_parts`: large objects in `jobs` streams of slices below 1 GB each;
- `early_index_entries` / `early_foreign_keys`: which schema entries (from the archive's
  table of contents) can be built as soon as their tables are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from render_rotator.postgres.archive import PG_CLASS, PG_CONSTRAINT, TocEntry, parse_toc
from render_rotator.postgres.catalog import Constraint, SourceCatalog, SourceTable

# Tables below this size travel many to one session pair (process + connection cost
# dominates their copy); their indexes are built by the final parallel pg_restore.
SMALL_TABLE_BYTES = 8 << 20
# Small enough that batches fill the schedule's gaps, big enough to amortize two sessions.
BATCH_BYTES = 16 << 20
BATCH_TABLES = 50
# No ctid range is cut smaller than this: each costs two connections and a scan start.
MIN_CHUNK_BYTES = 32 << 20
# A table is split into ctid ranges by its size alone only with more jobs than this. With
# two, one whole-table stream is faster: it already keeps both cores of a two-core machine
# busy (two psql, two backends), it loads in one TRUNCATE + COPY FREEZE transaction (ranges
# cannot: rows arrive unfrozen, and the first scan after the load must set every row's hint
# bits), and a small server (Render's free instance has a tenth of a CPU) gains nothing from
# two streams. Measured here, one (bigint, int, int) table of 1.5 GB with --jobs 2, content
# verification included: 24.1 s whole against 28.1 s in ranges (CPU 42.6 against 50.4 s).
SPLIT_MIN_JOBS = 2
# Large objects travel in slices of this many bytes: a bytea value must stay below 1 GB.
LO_SLICE = 64 * 1024 * 1024
# maintenance_work_mem of one index build, per server process taking part (see build_memory).
BUILD_MEMORY_MIN = 4 << 20
BUILD_MEMORY_MAX = 64 << 20
BUILD_MEMORY_SHARE = 32
# PostgreSQL starts a parallel build's workers only with this much memory per process.
PARALLEL_BUILD_MEMORY = 32 << 20


def load_order(
    tables: Sequence[SourceTable], constraints: dict[int, Constraint]
) -> list[SourceTable]:
    """Costliest tables first (see `load_costs`)."""
    cost = load_costs(tables, constraints)
    return sorted(tables, key=lambda t: (-cost[t.oid], t.schema, t.name))


def table_cost(table: SourceTable) -> float:
    """The work a table brings, in bytes-equivalent: its rows, then its index builds
    (weighted by access method)."""
    return float(table.size + table.index_cost)


def load_costs(
    tables: Sequence[SourceTable], constraints: dict[int, Constraint]
) -> dict[int, float]:
    """Each table's cost (`table_cost`), except that a table referenced by a foreign key
    counts just below the costliest table referencing it, so it loads right after: the key
    can only be validated once both are in, and must not be left for the end."""
    copied = {t.oid for t in tables}
    cost = {t.oid: table_cost(t) for t in tables}
    edges = [
        (c.table, c.referenced)
        for c in constraints.values()
        if c.contype == "f"
        and c.table in copied
        and c.referenced in copied
        and c.table != c.referenced
    ]
    for _round in range(len(tables)):  # a chain lifts at most one link per round
        changed = False
        for referencing, referenced in edges:
            lifted = cost[referencing] - 1.0
            if cost[referenced] < lifted:
                cost[referenced] = lifted
                changed = True
        if not changed:
            break
    return cost


@dataclass
class Chunk:
    """One COPY stream: a whole table (`parts == 1`) or one ctid block range of it."""

    table: SourceTable
    part: int
    parts: int
    low_block: int | None
    high_block: int | None

    @property
    def label(self) -> str:
        if self.parts == 1:
            return self.table.label
        return f"{self.table.label} (part {self.part}/{self.parts})"


def plan_chunks(
    tables: Sequence[SourceTable],
    *,
    jobs: int,
    split_bytes: int | None,
    ctid_ranges: bool,
) -> tuple[list[Chunk], list[list[SourceTable]]]:
    """Big tables as one or more chunks, small ones grouped into batches.

    With more than SPLIT_MIN_JOBS jobs, a table is split when it is larger than its fair
    share of the whole copy (so one table cannot serialize it); with any number of jobs,
    when it is larger than `split_bytes` (given). Pieces are at least MIN_CHUNK_BYTES unless
    `split_bytes` asks for smaller ones.
    """
    total = sum(t.size for t in tables)
    fair_share = total / max(1, jobs)
    piece = max(MIN_CHUNK_BYTES, total / max(1, 2 * jobs))
    chunks: list[Chunk] = []
    batches: list[list[SourceTable]] = []
    batch: list[SourceTable] = []
    batch_bytes = 0
    for table in tables:
        if table.size < SMALL_TABLE_BYTES and (split_bytes is None or table.size < split_bytes):
            batch.append(table)
            batch_bytes += table.size
            if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_TABLES:
                batches.append(batch)
                batch, batch_bytes = [], 0
            continue
        parts = 1
        if ctid_ranges and table.blocks > 1 and jobs > 1:
            if split_bytes is not None:
                if table.size > split_bytes:
                    parts = -(-table.size // split_bytes)
            elif (
                jobs > SPLIT_MIN_JOBS
                and table.size > fair_share
                and table.size > 2 * MIN_CHUNK_BYTES
            ):
                parts = round(table.size / piece)
            parts = max(1, min(parts, table.blocks, 8 * jobs))
        if parts == 1:
            chunks.append(Chunk(table, 1, 1, None, None))
            continue
        step = table.blocks / parts
        bounds = [round(i * step) for i in range(parts)] + [None]
        for i in range(parts):
            chunks.append(Chunk(table, i + 1, parts, bounds[i] if i else None, bounds[i + 1]))
    if batch:
        batches.append(batch)
    return chunks, batches


def large_object_parts(jobs: int, count: int) -> int:
    """How many side-by-side streams carry `count` large objects (none when there are none)."""
    return max(1, min(jobs, count)) if count else 0


def build_memory(cost: int, participants: int, server_limit: int | None) -> int:
    """The `maintenance_work_mem` (bytes) for an index build of `cost` (weighted source size,
    see `catalog.read_source`) run by `participants` server processes.

    Less memory, not more: btree sorts and GIN builds both cost less CPU in runs that fit
    the processor's cache than in one big in-memory pass (measured on PostgreSQL 18, CPU
    seconds of a 2.5 M-row text btree: 2.7 at 4 MB, 5.1 at the default 64 MB, 7.6 at
    256 MB; a jsonb_ops GIN of 650 k documents: 6.1 at 4 MB, 8.2 at 64 MB, 10.0 at 256 MB).
    Each process gets BUILD_MEMORY_MIN, a larger build up to 1/BUILD_MEMORY_SHARE of its
    size (so a huge sort keeps a short merge) and at most BUILD_MEMORY_MAX. A parallel
    build gets PARALLEL_BUILD_MEMORY per process, without which PostgreSQL launches no
    worker (the long pole is worth the extra CPU: 4.4 s on the leader instead of 6-7 s).
    Never more in all than the server's own setting (`server_limit`), so a small server
    (Render's free instance has 256 MB of RAM) is never asked for more than its owner
    allows.
    """
    per_process = min(BUILD_MEMORY_MAX, max(BUILD_MEMORY_MIN, cost // BUILD_MEMORY_SHARE))
    if participants > 1:
        per_process = max(per_process, PARALLEL_BUILD_MEMORY)
    wanted = per_process * max(1, participants)
    return wanted if server_limit is None else max(1 << 20, min(wanted, server_limit))


def index_oid(entry: TocEntry, plan: SourceCatalog) -> int:
    """The index an entry builds (a key constraint's entry names the constraint)."""
    if entry.catalog == PG_CONSTRAINT and entry.oid in plan.constraints:
        return plan.constraints[entry.oid].index
    return entry.oid


def early_index_entries(
    toc_lines: Sequence[str], plan: SourceCatalog, copied: set[int]
) -> dict[int, list[TocEntry]]:
    """Index and primary/unique/exclusion key entries of the tables we copy, by table.

    They only need their own table's rows, so they can be built while other tables are
    still streaming. Everything else (foreign keys, partitioned parents' indexes and their
    ATTACH, triggers, materialized views) waits for the final pg_restore -j.
    """
    early: dict[int, list[TocEntry]] = {}
    for entry in parse_toc("\n".join(line for line in toc_lines if not line.startswith(";"))):
        table_oid: int | None = None
        if entry.catalog == PG_CLASS and entry.desc.startswith("INDEX "):
            table_oid = plan.index_table.get(entry.oid)
        elif entry.catalog == PG_CONSTRAINT and entry.desc.startswith("CONSTRAINT "):
            found = plan.constraints.get(entry.oid)
            if found and found.contype in ("p", "u", "x"):
                table_oid = found.table
        if table_oid is not None and table_oid in copied:
            early.setdefault(table_oid, []).append(entry)
    for entries in early.values():
        entries.sort(key=lambda e: -plan.index_cost.get(index_oid(e, plan), 0))
    return early


def early_foreign_keys(
    toc_lines: Sequence[str], plan: SourceCatalog, copied: set[int]
) -> list[tuple[TocEntry, Constraint]]:
    """Foreign keys between two copied tables: validated as soon as both are ready."""
    found = []
    for entry in parse_toc("\n".join(line for line in toc_lines if not line.startswith(";"))):
        if entry.catalog != PG_CONSTRAINT or not entry.desc.startswith("FK CONSTRAINT "):
            continue
        fk = plan.constraints.get(entry.oid)
        if fk and fk.contype == "f" and fk.table in copied and fk.referenced in copied:
            found.append((entry, fk))
    return found
