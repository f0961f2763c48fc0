"""A local Render API emulator that provisions REAL PostgreSQL databases.

The whole rotation (inspect, freeze, back up, provision, restore, repoint, deploy, retire) can
run and be tested on one machine with no network: this module serves the Render REST calls the
rotation uses, with the paths, JSON keys, status codes and headers of Render's OpenAPI spec and
of real recorded traffic (``shared/render-api/``), as a WSGI application (`RenderEmulator.app`)
served by the standard library's wsgiref in a daemon thread (`RenderEmulator.start`), or driven
in-process through ``httpx.WSGITransport``.

Modules: `core` (the emulator, its Python API and request pipeline), `handlers` (one module per
Render resource), `faults` (fault injection), `provisioning` (real databases through the sandbox
`Cluster`), `clock` (`SystemClock`, `ManualClock`), `http` (Render's HTTP conventions), `wsgi`
(the WSGI adapter and server), `records` (Render's vocabulary and the stored records).

Creating a Postgres creates a real login role (not a superuser, like Render's user) and a real
database owned by it on a local `Cluster`, so restores meet Render's permission limits. Status
moves ``creating`` -> ``available`` after ``provision_delay`` seconds; deploys move to ``live``
after ``deploy_delay`` seconds, both on the emulator's `Clock` (computed lazily from timestamps,
no background ticker): a `ManualClock` lets tests move time instead of waiting.

Choices where neither the spec nor the recordings say what Render does (kept in one place so the
report and the tests can name them):

* A second free database for one owner is refused with **400**
  ``{"id": ..., "message": "cannot have more than one active free tier database"}``: the message
  is Render's own wording (its dashboard/blueprint refusal), and 400 is the only refusal status
  the spec lists for ``POST /postgres`` (no 409 there).
* ``404`` bodies are ``{"message": "not found: <id>"}`` exactly as recorded; every other error
  the emulator makes is ``{"id": <uuid>, "message": ...}`` (the spec's ``error`` schema).
* Postgres ids look like the recorded ones, ``dpg-<20 chars>-a``; the internal host is the id.
* ``databaseName`` gets a random ``_xxxx`` suffix like Render's; ``databaseUser`` gets one too
  (Render keeps the requested user, but roles are cluster-wide here, so two databases asking for
  the same user would collide; the product treats every new database's user as new anyway).
* External connection strings have Render's shape, ``postgresql://user:pw@127.0.0.1:<port>/db``
  with no ``sslmode`` (Render's carry none either), and like Render's they connect over TLS
  only: the cluster has a self-signed certificate and its TCP address refuses plain
  connections, so a client built without TLS fails here as it would against Render.
* Internal connection strings are reachable by default (``internal_reachable=True``): they go
  through the cluster's Unix socket (``postgresql://user:pw@localhost:<port>/db?host=<dir>``),
  the sandbox's private network, where a password login needs no TLS, as inside Render.
  ``internal_reachable=False`` gives Render's exact unreachable
  ``postgresql://user:pw@dpg-xxx-a/db``; `RenderEmulator.resolve_internal_url` maps either
  form to a URL that connects.
* Each database runs on a server of the major version it reports: one cluster per major,
  started on first use from the PostgreSQL installations found (`server_bins`). A version the
  machine cannot serve is refused with 400 (``version "16" is not available ...``).
* Unsupported methods on a known path answer 405 with an ``Allow`` header, any other method
  404 or 405, never 500 or 501. Every answer carries a ``Render-Request-Id`` shaped like
  Render's (``api-<pod>/<token>-<n>``).
* A request body needs a ``Content-Length`` (every Render client sends one): a chunked body
  over the socket answers 411, as the standard library's server passes chunks on undecoded.
* A deploy of a suspended service is allowed (the service stays suspended); resuming a service
  does not start a deploy.
* Services have Render's types (``web_service``, ``private_service``, ``background_worker``,
  ``cron_job``, ``static_site``). Only web services carry ``maintenanceMode``; a PATCH turning
  it on or off for another type answers 400 ``"maintenance mode is only supported for web
  services"`` (the spec gives 400 for PATCH /services/{id}; the wording is ours).
* ``POST .../deploys`` bodies are recorded (`RenderEmulator.deploy_requests`), refused ones too.
  ``deployMode: deploy_only`` beside ``commitId``, ``imageUrl`` or ``clearCache`` is a 400, as
  the spec's DeployMode says. ``deploy_only`` redeploys the last successful build (same commit
  or image, no ``build_in_progress``); a service with no successful build answers 400 (the
  spec lists 400 for this call but not this case's wording: ours).
* Blueprints (``GET /blueprints``, ``GET /blueprints/{id}`` with ``resources``) are records only:
  `RenderEmulator.add_blueprint` marks databases, services and env groups as managed; nothing
  ever syncs.
* The database really exists (and accepts logins) while its record still says ``creating``.
* Free databases get ``expiresAt`` = createdAt + 30 days (without one, createdAt + 30 days
  counts). Past it (on the emulator's clock, `RenderEmulator.now`, which tests move with
  `advance_clock`, or by `set_expires_at` in the past) the database is suspended: status
  ``suspended`` with suspender ``billing``, its role may not log in. 14 days later it is deleted.
  A PATCH to a paid plan clears ``expiresAt`` and restores access (``updating_instance`` for
  ``provision_delay`` seconds, then ``available``).
* ``ipAllowList``: omitted or null on create gives Render's default ``0.0.0.0/0``
  ("everywhere"); ``[]`` means no access from outside Render (answered as ``null``, as
  recorded). A list that does not admit this machine (the external URL's address) makes the
  server reject the database's role over TCP (a ``reject`` line in pg_hba.conf); the internal
  URL (the Unix socket) still connects, as services inside Render's network do.

Fault injection (``emulator.faults`` or the control endpoint, see `Faults.apply`) makes the
next requests answer 429/5xx (or every n-th request: ``flaky``), adds latency, drops
connections, fails or queues deploys, keeps new databases ``creating`` forever, seeds
unexpected objects into new databases, or refuses a new free database for a while after a
free one was deleted (``refuse_free_after_delete``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from render_rotator.sandbox.emulator.clock import Clock, ManualClock, SystemClock
from render_rotator.sandbox.emulator.core import IN_PROCESS_URL, RenderEmulator
from render_rotator.sandbox.emulator.faults import Faults
from render_rotator.sandbox.emulator.http import EmulatorAPIError
from render_rotator.sandbox.emulator.records import (
    API_PREFIX,
    CONTROL_PREFIX,
    DEPLOY_FAILURE_STATUSES,
    DEPLOY_ONLY_CONFLICT_MESSAGE,
    DEPLOY_ONLY_NO_BUILD_MESSAGE,
    FREE_TIER_LIMIT_MESSAGE,
    LEGACY_PLAN_MESSAGE,
    LEGACY_POSTGRES_PLANS,
    MAINTENANCE_ONLY_WEB_MESSAGE,
    POSTGRES_PLANS,
    POSTGRES_VERSIONS,
    REGIONS,
    SERVICE_TYPES,
    iso,
    new_id,
)


def expires_in(days: float, clock: Clock | None = None) -> datetime:
    """``now + days`` (on `clock`, else the wall clock) as an aware datetime, for
    `RenderEmulator.set_expires_at`."""
    now = datetime.fromtimestamp(clock.time(), UTC) if clock else datetime.now(UTC)
    return now + timedelta(days=days)


__all__ = [
    "API_PREFIX",
    "CONTROL_PREFIX",
    "DEPLOY_FAILURE_STATUSES",
    "IN_PROCESS_URL",
    "DEPLOY_ONLY_CONFLICT_MESSAGE",
    "DEPLOY_ONLY_NO_BUILD_MESSAGE",
    "FREE_TIER_LIMIT_MESSAGE",
    "LEGACY_PLAN_MESSAGE",
    "LEGACY_POSTGRES_PLANS",
    "MAINTENANCE_ONLY_WEB_MESSAGE",
    "POSTGRES_PLANS",
    "POSTGRES_VERSIONS",
    "REGIONS",
    "SERVICE_TYPES",
    "Clock",
    "EmulatorAPIError",
    "Faults",
    "ManualClock",
    "RenderEmulator",
    "SystemClock",
    "expires_in",
    "iso",
    "new_id",
]
