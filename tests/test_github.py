"""GitHub Actions integration as users meet it.

Under GITHUB_ACTIONS=true: masks precede every secret, phases are groups, the summary is a
markdown table, outputs use the runner's file format (a real rotation on the emulator, and the
`render-rotator rotate` command itself).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from render_rotator import github, logs, secrets
from tests.sample_report import REPORT, random_secret


@pytest.fixture
def actions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """GITHUB_ACTIONS=true with temp summary/output files; logging restored afterwards."""
    files = {"summary": tmp_path / "summary.md", "output": tmp_path / "output.txt"}
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(files["summary"]))
    monkeypatch.setenv("GITHUB_OUTPUT", str(files["output"]))
    logger = logging.getLogger("render_rotator")
    handlers = list(logger.handlers)
    listeners = list(secrets._listeners)
    yield files
    logger.handlers[:] = handlers
    secrets._listeners[:] = listeners


def parse_output_file(text: str) -> dict[str, str]:
    """Read $GITHUB_OUTPUT the way the runner does (name=value and name<<DELIM ... DELIM)."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value: list[str] = []
            while lines[i] != delimiter:
                value.append(lines[i])
                i += 1
            i += 1
            outputs[name] = "\n".join(value)
        else:
            name, value_text = line.split("=", 1)
            outputs[name] = value_text
    return outputs


def assert_masked_before_shown(text: str, secret: str) -> None:
    """`secret` may appear only in/after its ::add-mask:: line, and that line must exist."""
    mask_line = f"::add-mask::{github.escape_data(secret)}"
    assert mask_line in text, f"no mask for a secret of length {len(secret)}"
    first_mask = text.index(mask_line)
    first_seen = text.find(secret)
    # -1: never printed raw (a secret holding "%" appears escaped, as %25, in its mask line)
    assert first_seen == -1 or first_seen >= first_mask, "a secret was printed before its mask"


# --- workflow commands -----------------------------------------------------------------------


def test_escaping_follows_the_runner() -> None:
    assert github.escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert github.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_registering_a_secret_masks_it_before_any_log_line(
    actions: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    early = random_secret()
    secrets.register(early)  # learnt before install: masked by install itself
    logs.setup_logging(0)
    assert github.install() is True
    secret = random_secret()
    log = logging.getLogger("render_rotator.test")
    secrets.register(secret)
    log.info("connecting with %s", secret)
    secrets.register(secret)  # a second registration does not mask twice
    err = capsys.readouterr().err
    assert_masked_before_shown(err, secret)
    assert_masked_before_shown(err, early)
    assert err.count(f"::add-mask::{secret}") == 1
    assert f"connecting with {secret}" not in err  # and the log line is scrubbed too


def test_mask_covers_lines_and_url_encoding(
    actions: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    github.mask("p@ss/word%1")
    github.mask("line-one-xyz\nline-two-xyz")
    err = capsys.readouterr().err.splitlines()
    assert "::add-mask::p@ss/word%251" in err
    assert "::add-mask::p%2540ss%252Fword%25251" in err  # the percent-encoded form, escaped
    assert "::add-mask::line-one-xyz%0Aline-two-xyz" in err
    assert "::add-mask::line-one-xyz" in err and "::add-mask::line-two-xyz" in err


def test_nothing_is_emitted_outside_actions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "s.md"))
    github.mask(random_secret())
    github.annotate("error", "boom")
    with github.group("phase"):
        pass
    github.publish(REPORT)
    assert github.install() is False
    assert capsys.readouterr() == ("", "")
    assert not (tmp_path / "s.md").exists()


def test_groups_do_not_nest_and_annotations_escape(
    actions: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with github.group("phase copy"), github.group("inner"):
        github.annotate("warning", "100% sure\nsecond line", title="db: a,b")
    assert capsys.readouterr().err.splitlines() == [
        "::group::phase copy",
        "::warning title=db%3A a%2Cb::100%25 sure%0Asecond line",
        "::endgroup::",
    ]
    with pytest.raises(ValueError):
        github.annotate("fatal", "x")  # type: ignore[arg-type]


def test_log_warnings_become_annotations_once(
    actions: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging(0)
    github.install()
    github.install()
    logging.getLogger("render_rotator.x").warning("disk %s full", "almost")
    logging.getLogger("render_rotator.x").info("fine")
    err = capsys.readouterr().err
    assert err.count("disk almost full") == 1
    assert "::warning title=render-rotator::disk almost full" in err
    assert "INFO    fine" in err


# --- environment files -----------------------------------------------------------------------


def test_outputs_file_single_and_multiline(actions: dict[str, Path]) -> None:
    github.write_outputs({"rotated": True, "paths": "a.dump\nb.dump", "empty": None})
    github.write_outputs({"later": "x=y"})
    text = actions["output"].read_text()
    assert text.startswith("rotated=true\npaths<<ghadelimiter_")
    assert parse_output_file(text) == {
        "rotated": "true",
        "paths": "a.dump\nb.dump",
        "empty": "",
        "later": "x=y",
    }
    with pytest.raises(ValueError):
        github.write_outputs({"bad name": "x"})


def test_outputs_from_reports() -> None:
    assert github.outputs_from_report(REPORT) == {
        "rotated": "true",
        "new-postgres-id": "dpg-new-a",
        "expires-at": "2025-02-24T10:00:00+00:00",
        "ok": "true",
        "backup-path": "backups/myapp.dump",
    }
    not_due = {"ok": True, "rotated": False, "due": False, "database": "d", "new": None}
    assert github.outputs_from_report(not_due)["rotated"] == "false"
    assert github.outputs_from_report(not_due)["new-postgres-id"] == ""
    failed = {**REPORT, "ok": False, "rotated": False, "exit_code": 1}
    assert github.outputs_from_report(failed)["ok"] == "false"
    fleet = {
        "ok": True,
        "rotated": True,
        "databases": [REPORT, {**REPORT, "new": {"id": "dpg-two", "expires_at": "2025-03-01"}}],
    }
    out = github.outputs_from_report(fleet)
    assert out["new-postgres-id"] == "dpg-new-a,dpg-two"
    assert out["backup-path"] == "backups/myapp.dump\nbackups/myapp.dump"


def test_summary_is_a_markdown_table_without_secrets(actions: dict[str, Path]) -> None:
    secret = random_secret()
    secrets.register(secret)
    report = {**REPORT, "message": f"rotated | with {secret}", "notes": ["used delete-first"]}
    github.write_summary(report)
    github.write_summary(report)  # appends, as several steps may write
    text = actions["summary"].read_text()
    assert secret not in text
    assert text.count("## render-rotator") == 2
    lines = text.splitlines()
    header = lines.index("| Database | Outcome | Old | New | Expires | Write freeze |")
    assert lines[header + 1] == "| --- | --- | --- | --- | --- | --- |"
    assert lines[header + 2] == (
        "| myapp-db | ✅ rotated | `dpg-old-a` | `dpg-new-a` | 2025-02-24T10:00:00+00:00 | 12.3 s |"
    )
    assert "rotated \\| with ***" in text
    assert "| New database | `dpg-new-a` myapp-db-20250125, PostgreSQL 16 |" in text
    assert "| copy | done | 3.5 |" in text
    assert "| Copied | 5,000 rows, 120.6 KiB |" in text
    assert "> used delete-first" in text


def test_publish_annotates_failures_and_writes_files(
    actions: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {
        **REPORT,
        "ok": False,
        "rotated": False,
        "exit_code": 3,
        "new": None,
        "message": "copy differs: users 10 != 9",
    }
    github.publish(failed)
    err = capsys.readouterr().err
    assert "::error title=render-rotator%3A myapp-db mismatch::copy differs%3A" not in err
    assert "::error title=render-rotator%3A myapp-db mismatch::copy differs: users 10 != 9" in err
    assert "❌ mismatch" in actions["summary"].read_text()
    assert parse_output_file(actions["output"].read_text())["ok"] == "false"


def test_status_summary_and_due_output(actions: dict[str, Path]) -> None:
    status = {
        "databases": [
            {
                "name": "app-db",
                "postgres_name": "app-db-20250101",
                "id": "dpg-a",
                "status": "available",
                "version": "16",
                "plan": "free",
                "expires_at": "2025-01-31T00:00:00+00:00",
                "days_left": 2.25,
                "targets": [{"target": "srv-x:DATABASE_URL", "connection": "internal"}],
                "due": True,
            },
            {"name": "gone", "id": None, "status": "not found", "targets": [], "due": False},
        ]
    }
    github.publish_status(status)
    summary = actions["summary"].read_text()
    assert (
        "| app-db-20250101 | `dpg-a` | available | 16 | free | 2025-01-31T00:00:00+00:00 | 2.2 "
        "| ⏰ yes | srv-x:DATABASE_URL |" in summary
    )
    assert "| gone | – | not found | – | – | – | – | no | – |" in summary
    assert parse_output_file(actions["output"].read_text()) == {"due": '["app-db"]'}


def test_pg_client_major(tmp_path: Path) -> None:
    status = {
        "databases": [
            {"name": "a", "id": "dpg-a", "version": "15"},
            {"name": "b", "id": "dpg-b", "version": "16"},
            {"name": "gone", "id": None, "status": "not found"},
        ]
    }
    assert github.pg_client_major(status) == 16
    assert github.pg_client_major(status, "a") == 15
    assert github.pg_client_major(status, "dpg-a", {"a": "17"}) == 17  # an upgrade wins
    assert github.pg_client_major(status, "gone") is None
    path = tmp_path / "status.json"
    path.write_text(json.dumps(status))
    run = subprocess.run(
        [sys.executable, "-m", "render_rotator.github", "pg-major", "--status", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout == "16\n"


# --- a real rotation under GITHUB_ACTIONS=true ----------------------------------------------


@pytest.fixture
def emulated(pg: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A seeded emulator scenario and a config file rotating its database."""
    from render_rotator.postgres.url import PgURL
    from render_rotator.sandbox.emulator import RenderEmulator
    from render_rotator.sandbox.seed import seed_demo

    with RenderEmulator(pg, provision_delay=0.2, deploy_delay=0.2) as emu:
        scenario = seed_demo(emu, rows=300)
        config = tmp_path / "render-rotator.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [[database]]
                name = "{scenario.postgres_name}"
                  [[database.target]]
                  service = "{scenario.service_id}"
                """
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
        env.update(
            RENDER_API_KEY=emu.api_key,
            RENDER_API_URL=emu.base_url,
            GITHUB_ACTIONS="true",
            GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
            GITHUB_OUTPUT=str(tmp_path / "output.txt"),
        )
        yield {
            "emu": emu,
            "config": config,
            "env": env,
            "tmp": tmp_path,
            "old_password": PgURL.parse(scenario.external_url).password,
            "api_key": emu.api_key,
        }


def _check_actions_run(run: subprocess.CompletedProcess[str], emulated: dict[str, Any]) -> None:
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)  # stdout is exactly one JSON object
    assert report["rotated"] is True
    new_id = report["new"]["id"]
    new_info = emulated["emu"].connection_info(new_id)
    secrets = [
        emulated["old_password"],
        new_info["password"],
        new_info["internalConnectionString"],
        new_info["externalConnectionString"],
    ]
    for secret in secrets:
        assert secret not in run.stdout
        assert_masked_before_shown(run.stderr, secret)
    err = run.stderr.splitlines()
    assert "::group::phase inspect" in err and "::group::phase copy" in err
    assert err.count("::group::phase copy") == 1
    assert err.count("::endgroup::") == sum(1 for line in err if line.startswith("::group::"))
    assert any(line.startswith("::notice title=render-rotator%3A") for line in err)

    tmp: Path = emulated["tmp"]
    summary = (tmp / "summary.md").read_text()
    outputs = parse_output_file((tmp / "output.txt").read_text())
    for secret in secrets:
        assert secret not in summary and secret not in "".join(outputs.values())
    assert "| Database | Outcome | Old | New | Expires | Write freeze |" in summary
    assert f"| ✅ rotated | `{report['old']['id']}` | `{new_id}` |" in summary
    assert "| verify | done |" in summary
    assert outputs["rotated"] == "true"
    assert outputs["new-postgres-id"] == new_id
    assert outputs["expires-at"] == report["new"]["expires_at"]
    assert outputs["backup-path"] == report["backup"]["path"]
    assert Path(outputs["backup-path"]).exists()


ROTATE_AS_THE_CLI_WILL = textwrap.dedent(
    """
    import json, sys
    from render_rotator import github
    from render_rotator.logs import setup_logging
    from render_rotator.rotation.workflow import rotate
    from render_rotator.ui import make_ui
    setup_logging(0)
    github.install()
    with make_ui(as_json=True) as ui:
        result = rotate(sys.argv[1], yes=True, ui=ui, if_expiring_within=60)
    report = result.to_dict()
    github.publish(report)
    print(json.dumps(report, indent=2))
    sys.exit(result.exit_code)
    """
)


def test_rotation_under_actions_masks_summarises_and_outputs(emulated: dict[str, Any]) -> None:
    """The wiring the CLI uses (install, make_ui, publish) around a real rotation."""
    run = subprocess.run(
        [sys.executable, "-c", ROTATE_AS_THE_CLI_WILL, str(emulated["config"])],
        capture_output=True,
        text=True,
        env=emulated["env"],
        timeout=120,
    )
    _check_actions_run(run, emulated)


def test_cli_rotate_under_actions(emulated: dict[str, Any]) -> None:
    """`render-rotator rotate --json` itself, as action.yml runs it."""
    from render_rotator.cli import cli

    if "rotate" not in getattr(cli, "commands", {}):
        pytest.skip("the CLI has no `rotate` command yet")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "render_rotator",
            "rotate",
            "-c",
            str(emulated["config"]),
            "--json",
            "--yes",
            "--if-expiring-within",
            "60",
        ],
        capture_output=True,
        text=True,
        env=emulated["env"],
        timeout=120,
    )
    _check_actions_run(run, emulated)


def test_the_actions_status_summary_shows_when_render_deletes_an_expired_database() -> None:
    from render_rotator.github import status_markdown

    entry = {
        "name": "app-db",
        "id": "dpg-a",
        "status": "expired",
        "plan": "free",
        "expired": True,
        "deleted_at": "2026-06-05T12:00:00+00:00",
        "days_left": -10.0,
        "due": True,
    }
    row = status_markdown({"databases": [entry]}).splitlines()[-1]
    assert "| expired (deleted on 2026-06-05; rotate --rescue) |" in row
