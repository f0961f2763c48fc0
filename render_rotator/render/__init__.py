"""Render API access: the typed client and the models it returns."""

from .client import DEFAULT_BASE_URL, RenderClient, is_free_tier_refusal
from .models import (
    DEPLOY_SUCCESSFUL,
    DEPLOY_TERMINAL,
    POSTGRES_FAILED,
    POSTGRES_TERMINAL,
    ConnectionInfo,
    Deploy,
    DeployStatus,
    EnvGroup,
    EnvVar,
    IPAllowEntry,
    Owner,
    Postgres,
    PostgresStatus,
    Service,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEPLOY_SUCCESSFUL",
    "DEPLOY_TERMINAL",
    "POSTGRES_FAILED",
    "POSTGRES_TERMINAL",
    "ConnectionInfo",
    "Deploy",
    "DeployStatus",
    "EnvGroup",
    "EnvVar",
    "IPAllowEntry",
    "Owner",
    "Postgres",
    "PostgresStatus",
    "RenderClient",
    "Service",
    "is_free_tier_refusal",
]
