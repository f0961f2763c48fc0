"""The IP allow list (rotation/access.py): whether it admits everyone, and an unreachable
database's error naming the allow list only when it can be the cause."""

from __future__ import annotations

from render_rotator.errors import AuthenticationError, ConnectError
from render_rotator.render import IPAllowEntry
from render_rotator.rotation.access import admits_everyone, explain_unreachable
from tests.render_records import postgres_record as _pg


def test_admits_everyone() -> None:
    assert admits_everyone([IPAllowEntry("0.0.0.0/0", "everywhere")])
    assert admits_everyone([IPAllowEntry("10.0.0.0/8"), IPAllowEntry("::/0")])
    assert not admits_everyone([])
    assert not admits_everyone([IPAllowEntry("203.0.113.0/24"), IPAllowEntry("not a cidr")])


def test_the_error_names_the_allow_list_only_when_it_can_be_the_cause() -> None:
    error = AuthenticationError("authentication failed for db: pg_hba.conf rejects connection")
    open_pg = _pg(ipAllowList=[{"cidrBlock": "0.0.0.0/0", "description": "everywhere"}])
    assert explain_unreachable(open_pg, error) is error
    empty = explain_unreachable(_pg(ipAllowList=None), error)
    assert isinstance(empty, ConnectError)
    assert "its IP allow list is empty" in empty.message and "dpg-1-a" in empty.message
    assert "pg_hba.conf rejects" in empty.message  # the original words are kept
    assert empty.hint and "GitHub Actions" in empty.hint
    office = _pg(ipAllowList=[{"cidrBlock": "203.0.113.0/24", "description": "office"}])
    assert "(203.0.113.0/24)" in explain_unreachable(office, error).message
    plain = AuthenticationError("postgresql://u:***@h/d accepts only TLS connections, and ...")
    assert explain_unreachable(office, plain) is plain  # its own cause and fix are named
