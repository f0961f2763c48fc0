"""Everything one rotation's phases share: config, client, journal, live Render objects.

Render objects are re-read from the API (ids come from the journal), never trusted from a
previous process, so a resumed rotation acts on what exists now. Connection strings and
passwords live only in memory and are registered as secrets the moment we learn them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from render_rotator import secrets
from render_rotator.config import Config, DatabaseConfig, Settings
from render_rotator.errors import NotFoundError
from render_rotator.postgres.manager import DatabaseManager
from render_rotator.postgres.url import require_tls
from render_rotator.render import ConnectionInfo, Postgres, RenderClient
from render_rotator.rotation.journal import Journal
from render_rotator.rotation.lease import Lease
from render_rotator.rotation.observer import LogUI, RotationUI
from render_rotator.rotation.report import RotationReport
from render_rotator.rotation.state import RotationState
from render_rotator.rotation.targets import TargetValue

log = logging.getLogger("render_rotator.rotation")


@dataclass
class Rotation:
    """The shared state of one rotation run."""

    config: Config
    db: DatabaseConfig
    client: RenderClient
    journal: Journal
    report: RotationReport
    ui: RotationUI = field(default_factory=LogUI)
    yes: bool = False
    confirm: Callable[[str], bool] | None = None
    pg_bin: str | None = None
    today: Any = None  # datetime.date; injectable for tests
    #: ``--backup PATH``: the backup to finish from when the old database is gone and no
    #: journal knows where its backup is (see rotation/recovery.py)
    backup_hint: Path | None = None
    rescue: bool = False  # rotate --rescue: an expired free database may be upgraded

    _old: Postgres | None = None
    _new: Postgres | None = None
    _conn: dict[str, ConnectionInfo] = field(default_factory=dict)
    target_values: list[TargetValue] = field(default_factory=list)
    old_values: dict[str, str | None] = field(default_factory=dict)
    #: this run's lease (rotation/lease.py), once taken
    lease: Lease | None = None
    #: the drift check the guard runs right before deleting the old database
    #: (guard.DriftCheck, given the sealed database's sessions; None: guard.content_drift_check)
    drift_check: Callable[..., Any] | None = None

    @property
    def settings(self) -> Settings:
        return self.db.settings

    @property
    def state(self) -> RotationState:
        return self.journal.state

    def save(self) -> None:
        self.journal.save()

    # -- Render objects -----------------------------------------------------------------

    def postgres(self, postgres_id: str) -> Postgres | None:
        try:
            return self.client.get_postgres(postgres_id)
        except NotFoundError:
            return None

    @property
    def old(self) -> Postgres | None:
        """The old database as Render has it now (None once deleted)."""
        if self._old is None and self.state.old_id and not self.state.old_deleted:
            self._old = self.postgres(self.state.old_id)
        return self._old

    @property
    def new(self) -> Postgres | None:
        if self._new is None and self.state.new_id:
            self._new = self.postgres(self.state.new_id)
        return self._new

    def set_old(self, pg: Postgres | None) -> None:
        self._old = pg

    def set_new(self, pg: Postgres | None) -> None:
        self._new = pg

    def connection_info(self, postgres_id: str) -> ConnectionInfo:
        """Connection info, fetched once per run and registered as secret at once."""
        if postgres_id not in self._conn:
            info = self.client.get_connection_info(postgres_id)
            for secret in (
                info.password,
                info.internal_connection_string,
                info.external_connection_string,
            ):
                secrets.register(secret)
            self._conn[postgres_id] = info
        return self._conn[postgres_id]

    def old_url(self) -> str:
        """The old database's external URL as we connect to it: over TLS, as Render demands."""
        return require_tls(self.connection_info(self.state.known_old_id).external_connection_string)

    def new_url(self) -> str:
        """The new database's external URL as we connect to it: over TLS."""
        return require_tls(self.connection_info(self.state.known_new_id).external_connection_string)

    def manager(self) -> DatabaseManager:
        return DatabaseManager(
            connect_timeout=self.settings.connect_timeout,
            command_timeout=self.settings.command_timeout,
            pg_bin=self.pg_bin,
            jobs=self.settings.jobs,
        )

    # -- services -----------------------------------------------------------------------

    def affected_services(self) -> list[str]:
        """Services that read a target: targeted directly or linked to a targeted env group."""
        if self.state.services is not None:
            return list(self.state.services)
        services: list[str] = []
        for target in self.db.targets:
            ids = [target.service] if target.service else []
            if target.env_group:
                ids = list(self.client.get_env_group(target.env_group).service_ids)
            for service_id in ids:
                if service_id and service_id not in services:
                    services.append(service_id)
        self.state.services = services
        return services
