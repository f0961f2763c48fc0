"""action.yml and the example workflows pass GitHub's own checks and do what they claim.

- GitHub's published JSON schemas for actions and workflows (vendored by check-jsonschema);
- zizmor's security audit (offline: no GitHub token, no network);
- both checks shown to be live by failing on deliberately broken files;
- the action's shell steps run for real under bash with a stand-in `render-rotator`, and the
  fleet's jq turns a `status --json` document into the job matrix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
EXAMPLES = sorted((ROOT / "examples" / "github-actions").glob("*.yml"))
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _tool(name: str) -> str:
    """The CLI installed next to this Python (the test extra installs both)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN")}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, **kwargs
    )


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def test_examples_exist() -> None:
    assert [p.name for p in EXAMPLES] == ["rotate-fleet.yml", "rotate.yml"]


# --- GitHub's schemas and zizmor --------------------------------------------------------------


def test_action_matches_githubs_action_schema() -> None:
    run = _run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", "action.yml"]
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_workflows_match_githubs_workflow_schema() -> None:
    files = [str(p.relative_to(ROOT)) for p in EXAMPLES]
    run = _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files])
    assert run.returncode == 0, run.stdout + run.stderr


def _zizmor(*paths: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [_tool("zizmor"), "--offline", "--no-config", "--no-progress", "--format", "plain", *paths]
    )


def test_zizmor_finds_nothing() -> None:
    files = ["action.yml", *(str(p.relative_to(ROOT)) for p in EXAMPLES)]
    run = _zizmor(*files)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "No findings" in run.stdout


def test_the_checks_are_live(tmp_path: Path) -> None:
    """A schema error and a template injection are caught, so green means something."""
    bad_action = tmp_path / "action.yml"
    bad_action.write_text(
        "name: x\ndescription: x\nruns:\n  using: composite\n  steps:\n    - run: echo hi\n"
    )
    run = _run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(bad_action)]
    )
    assert run.returncode != 0  # a composite `run` step without `shell`
    injectable = tmp_path / "injectable.yml"
    injectable.write_text(
        "on:\n  issues:\n    types: [opened]\npermissions: {}\njobs:\n  a:\n"
        "    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ github.event.issue.title }}"\n'
    )
    run = _zizmor(str(injectable))
    assert run.returncode != 0
    assert "template-injection" in run.stdout


# --- what the files promise -------------------------------------------------------------------


def _uses(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["uses"]] if isinstance(node.get("uses"), str) else []
        return found + [u for v in node.values() for u in _uses(v)]
    if isinstance(node, list):
        return [u for v in node for u in _uses(v)]
    return []


def _runs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["run"]] if isinstance(node.get("run"), str) else []
        return found + [r for v in node.values() for r in _runs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _runs(v)]
    return []


def test_action_interface() -> None:
    action = _load(ACTION)
    inputs = action["inputs"]
    for name in (
        "config",
        "api-key",
        "database",
        "if-expiring-within",
        "dry-run",
        "pg-version",
        "pg-bin",
        "python-version",
        "backup-retention-days",
        "package-spec",
    ):
        assert name in inputs, name
    assert inputs["api-key"]["required"] is True
    # no apt step by default: the embedded PostgreSQL 18 client (with TLS) serves
    assert inputs["pg-version"]["default"] == "embedded"
    assert inputs["pg-bin"]["default"] == ""
    assert {"rotated", "new-postgres-id", "expires-at"} <= set(action["outputs"])
    assert action["runs"]["using"] == "composite"
    text = ACTION.read_text()
    assert "apt.postgresql.org" in text and "postgresql-client-$PG_MAJOR" in text
    assert "retention-days: ${{ inputs.backup-retention-days }}" in text


def test_everything_is_pinned_and_no_input_reaches_a_script() -> None:
    for path in [ACTION, *EXAMPLES]:
        data = _load(path)
        for uses in _uses(data):
            assert SHA_PIN.match(uses), f"{path.name}: {uses} is not pinned to a commit"
        for script in _runs(data):
            assert "${{" not in script, f"{path.name}: expression inside a run script"


def test_single_database_workflow() -> None:
    wf = _load(ROOT / "examples" / "github-actions" / "rotate.yml")
    assert wf["on"]["schedule"][0]["cron"]
    assert wf["on"]["workflow_dispatch"]["inputs"]["dry-run"]["type"] == "boolean"
    assert wf["concurrency"] == {"group": "render-rotator", "cancel-in-progress": False}
    assert wf["permissions"] == {}
    job = wf["jobs"]["rotate"]
    assert job["permissions"] == {"contents": "read"}
    step = next(s for s in job["steps"] if "render-rotator@" in s.get("uses", ""))
    assert step["with"]["api-key"] == "${{ secrets.RENDER_API_KEY }}"


def test_fleet_workflow_builds_a_matrix_from_status() -> None:
    wf = _load(ROOT / "examples" / "github-actions" / "rotate-fleet.yml")
    assert wf["permissions"] == {}
    assert wf["concurrency"]["cancel-in-progress"] is False
    plan, rotate = wf["jobs"]["plan"], wf["jobs"]["rotate"]
    assert any(s.get("with", {}).get("command") == "status" for s in plan["steps"])
    assert rotate["needs"] == "plan"
    assert rotate["strategy"]["fail-fast"] is False
    assert rotate["strategy"]["matrix"]["database"] == (
        "${{ fromJSON(needs.plan.outputs.databases) }}"
    )
    step = next(s for s in rotate["steps"] if "render-rotator@" in s.get("uses", ""))
    assert step["with"]["database"] == "${{ matrix.database }}"


# --- the scripts, run for real -------------------------------------------------------------


def _step(path: Path, name_or_id: str) -> dict[str, Any]:
    data = _load(path)
    steps = (
        data["runs"]["steps"]
        if "runs" in data
        else [s for job in data["jobs"].values() for s in job.get("steps", [])]
    )
    return next(s for s in steps if name_or_id in (s.get("id"), s.get("name")))


def _bash(script: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_OUTPUT": str(tmp_path / "output.txt"),
        "GITHUB_RUN_ID": "1234",
        "GITHUB_RUN_ATTEMPT": "2",
        **env,
    }
    return subprocess.run(
        ["bash", "-e", "-c", script], capture_output=True, text=True, env=full, timeout=60
    )


FAKE_CLI = """#!/usr/bin/env bash
# stands in for render-rotator: records its arguments and environment
echo "::add-mask::not-really-a-secret" >&2
echo "progress on stderr" >&2
printf '{"argv": "%s", "pg_bin": "%s", "key": "%s"}\\n' "$*" "${RENDER_ROTATOR_PG_BIN:-}" \\
  "${RENDER_API_KEY:-}"
exit "${FAKE_EXIT:-0}"
"""


def _fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "render-rotator"
    fake.write_text(FAKE_CLI)
    fake.chmod(0o755)
    # a wrapper, not a symlink: a symlinked interpreter would lose the virtualenv
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return bin_dir


def _outputs(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / "output.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize(
    ("within", "dry_run", "database", "expected"),
    [
        ("", "false", "", "rotate --json --yes --if-expiring-within"),
        (
            "30",
            "true",
            "my db",
            "rotate --json --yes --database my db --dry-run --if-expiring-within 30",
        ),
    ],
)
def test_rotate_step_keeps_stdout_for_json(
    tmp_path: Path, within: str, dry_run: str, database: str, expected: str
) -> None:
    bin_dir = _fake_bin(tmp_path)
    env = {
        "RR_BIN": str(bin_dir),
        "RR_PG_BIN": "/usr/lib/postgresql/16/bin",
        "RR_DATABASE": database,
        "RR_WITHIN": within,
        "RR_DRY_RUN": dry_run,
        "RENDER_API_KEY": "rnd_key",
        "RENDER_ROTATOR_CONFIG": "render-rotator.toml",
    }
    run = _bash(_step(ACTION, "rotate")["run"], env, tmp_path)
    assert run.returncode == 0, run.stderr
    outputs = _outputs(tmp_path)
    report = json.loads(Path(outputs["report"]).read_text())  # stdout only: one JSON object
    assert report == {"argv": expected, "pg_bin": "/usr/lib/postgresql/16/bin", "key": "rnd_key"}
    assert "::add-mask::not-really-a-secret" in run.stderr  # stderr reaches the runner's log
    name = outputs["artifact"]
    assert name == f"render-rotator-backup-{database.replace(' ', '-') or 'all'}-1234-2"


def test_rotate_step_fails_with_the_tool(tmp_path: Path) -> None:
    env = {"RR_BIN": str(_fake_bin(tmp_path)), "RR_PG_BIN": "", "FAKE_EXIT": "3"}
    env |= {"RR_DATABASE": "", "RR_WITHIN": "", "RR_DRY_RUN": "false"}
    run = _bash(_step(ACTION, "rotate")["run"], env, tmp_path)
    assert run.returncode == 3
    assert json.loads(Path(_outputs(tmp_path)["report"]).read_text())["pg_bin"] == ""


def test_status_step_outputs_one_line_of_json(tmp_path: Path) -> None:
    env = {"RR_BIN": str(_fake_bin(tmp_path)), "RENDER_API_KEY": "rnd_key"}
    run = _bash(_step(ACTION, "status")["run"], env, tmp_path)
    assert run.returncode == 0, run.stderr
    outputs = _outputs(tmp_path)
    assert json.loads(outputs["status-json"])["argv"] == "status --json"
    assert json.loads(Path(outputs["path"]).read_text()) == json.loads(outputs["status-json"])
    run = _bash(_step(ACTION, "status")["run"], {**env, "FAKE_EXIT": "2"}, tmp_path)
    assert run.returncode == 2  # a failing `status` fails the step


def test_pg_version_step_installs_only_what_the_embedded_client_cannot_serve(
    tmp_path: Path,
) -> None:
    status = tmp_path / "status.json"
    status.write_text(
        json.dumps(
            {
                "databases": [
                    {"name": "app-db", "id": "dpg-a", "version": "15"},
                    {"name": "reports", "id": "dpg-b", "version": "18"},
                    {"name": "future", "id": "dpg-c", "version": "19"},
                ]
            }
        )
    )
    config = tmp_path / "render-rotator.toml"
    config.write_text(
        '[[database]]\nname = "app-db"\nversion = "17"\n\n[[database]]\nname = "reports"\n'
        '\n[[database]]\nname = "future"\n'
    )
    script = _step(ACTION, "pg")["run"]
    base = {"RR_BIN": str(_fake_bin(tmp_path)), "RR_STATUS": str(status)}
    base["RENDER_ROTATOR_CONFIG"] = str(config)
    installs = [("auto", "", "19"), ("auto", "future", "19"), ("19", "", "19"), ("15", "", "15")]
    for version, database, expected in installs:
        (tmp_path / "output.txt").unlink(missing_ok=True)
        env = {**base, "RR_PG_VERSION": version, "RR_DATABASE": database}
        run = _bash(script, env, tmp_path)
        assert run.returncode == 0, run.stderr
        assert _outputs(tmp_path) == {"major": expected}
    # the embedded PostgreSQL 18 client serves these: nothing to install, no apt step
    for version, database in [("embedded", ""), ("system", ""), ("auto", "app-db"),
                              ("auto", "reports")]:  # fmt: skip
        (tmp_path / "output.txt").unlink(missing_ok=True)
        env = {**base, "RR_PG_VERSION": version, "RR_DATABASE": database}
        run = _bash(script, env, tmp_path)
        assert run.returncode == 0, run.stderr
        assert not (tmp_path / "output.txt").exists(), (version, database)
        assert "PostgreSQL 18" in run.stdout


def test_the_embedded_client_major_is_reported() -> None:
    run = _run([sys.executable, "-m", "render_rotator.github", "embedded-major"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "18"


def test_a_custom_client_directory_reaches_the_rotation(tmp_path: Path) -> None:
    step = _step(ACTION, "rotate")
    assert step["env"]["RR_PG_BIN"] == "${{ inputs.pg-bin || steps.pgclient.outputs.bin }}"
    assert _step(ACTION, "pg")["if"] == "inputs.command == 'rotate' && inputs.pg-bin == ''"
    env = {"RR_BIN": str(_fake_bin(tmp_path)), "RR_PG_BIN": "/opt/pg/bin"}
    env |= {"RR_DATABASE": "", "RR_WITHIN": "", "RR_DRY_RUN": "false"}
    run = _bash(step["run"], env, tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(Path(_outputs(tmp_path)["report"]).read_text())["pg_bin"] == "/opt/pg/bin"


def test_input_checks_reject_bad_values(tmp_path: Path) -> None:
    script = _step(ACTION, "Check the runner and inputs")["run"]
    good = {
        "RR_OS": "Linux",
        "RR_COMMAND": "rotate",
        "RR_PG_VERSION": "embedded",
        "RR_PG_BIN": "",
        "RR_UPLOAD": "auto",
        "RR_WITHIN": "",
    }
    assert _bash(script, good, tmp_path).returncode == 0
    for version in ("auto", "system", "19"):
        assert _bash(script, {**good, "RR_PG_VERSION": version}, tmp_path).returncode == 0
    assert _bash(script, {**good, "RR_PG_BIN": "/opt/pg/bin"}, tmp_path).returncode == 0
    both = _bash(script, {**good, "RR_PG_BIN": "/opt/pg/bin", "RR_PG_VERSION": "19"}, tmp_path)
    assert both.returncode == 2 and "not both" in both.stdout
    for key, value in [
        ("RR_OS", "Windows"),
        ("RR_PG_VERSION", "16; rm -rf /"),
        ("RR_WITHIN", "7 days"),
        ("RR_COMMAND", "delete"),
        ("RR_UPLOAD", "maybe"),
    ]:
        run = _bash(script, {**good, key: value}, tmp_path)
        assert run.returncode == 2, key
        assert run.stdout.startswith("::error title=render-rotator::")


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_fleet_matrix_from_status_json(tmp_path: Path) -> None:
    status = {
        "databases": [
            {"name": "app-db", "id": "dpg-a", "days_left": 3.5, "due": True},
            {"name": "app-db", "id": "dpg-a2", "days_left": 2.0, "due": True},
            {"name": "reports", "id": "dpg-b", "days_left": 20.0, "due": False},
            {"name": "fresh", "id": "dpg-c", "days_left": 29.9, "due": False},
            {"name": "gone", "id": None, "status": "not found", "due": False},
        ]
    }
    script = _step(ROOT / "examples" / "github-actions" / "rotate-fleet.yml", "matrix")["run"]
    for within, expected in [("", ["app-db"]), ("25", ["app-db", "reports"])]:
        (tmp_path / "output.txt").unlink(missing_ok=True)
        run = _bash(script, {"STATUS_JSON": json.dumps(status), "WITHIN": within}, tmp_path)
        assert run.returncode == 0, run.stderr
        assert json.loads(_outputs(tmp_path)["databases"]) == expected
