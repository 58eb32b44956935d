"""mParticle's answers: only its documented 202 is acceptance; 408 and 3xx like Usermaven's.

Each server is a stdlib HTTP server on loopback (tests/hostile.py) speaking for mParticle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import read_report, run_cli, write_csv
from hostile import MP_KEY, MP_SECRET, Exchange, hostile_server

FAST = ["--backoff-base", "0.01", "--backoff-max", "0.02"]
MP_ENV = {"MPARTICLE_API_KEY": MP_KEY, "MPARTICLE_API_SECRET": MP_SECRET}


def mp_rows(n: int = 1) -> list[dict[str, str]]:
    return [{"event_id": f"00000000-0000-4000-8000-{i:012d}",
             "timestamp": "2026-11-20T10:00:00Z", "identity.customer_id": f"C-{i}",
             "set.final_price": f"{i}.50"} for i in range(n)]


def send_to(url: str, tmp_path: Path, rows: list[dict[str, str]] | None = None,
            *extra: str) -> Any:
    sheet = tmp_path / "s.csv"
    if not sheet.exists():
        write_csv(sheet, rows or mp_rows())
    return run_cli(["apply", str(sheet), "--target", "mparticle", "--mparticle-url", url,
                    "--max-attempts", "2", *FAST, *extra], env=MP_ENV, timeout=60)


def mp_lines(tmp_path: Path) -> list[dict[str, str]]:
    return [r for r in read_report(tmp_path / "s.audit.csv") if r["target"] == "mparticle"]


NOT_ACCEPTANCE = {
    "200 html": (200, "<html><body>Welcome</body></html>", "text/html"),
    "200 empty": (200, "", None),
    "201 json": (201, "{}", "application/json"),
    "204": (204, "", None),
    "202 html": (202, "<html>maintenance</html>", "text/html"),
    "202 json list": (202, "[1, 2]", "application/json"),
}


@pytest.mark.parametrize("answer", list(NOT_ACCEPTANCE))
def test_only_the_documented_202_counts_as_accepted(tmp_path, answer):
    """A 200 page, another 2xx, or a 202 with an undocumented body is retried, never `accepted`."""
    status, body, kind = NOT_ACCEPTANCE[answer]

    def respond(ex: Exchange) -> None:
        if status == 204:
            ex.handler.send_response(204)
            ex.handler.end_headers()
            return
        ex.reply(status, body, headers={"Content-Type": kind} if kind else None)

    with hostile_server(respond) as srv:
        first = send_to(srv.url, tmp_path)
        assert first.returncode == 1, first.stderr
        assert "Traceback" not in first.stderr
        line = mp_lines(tmp_path)[0]
        assert line["status"] == "failed" and line["http_status"] == str(status)
        assert "not proof of acceptance" in line["error"], line["error"]
        assert len(srv.seen) == 2
        srv.respond = lambda ex: ex.reply(202, "")
        second = send_to(srv.url, tmp_path)
    assert second.returncode == 0, second.stderr
    assert mp_lines(tmp_path)[0]["status"] == "accepted"
    assert len(srv.seen) == 3 and len({ex.body for ex in srv.seen}) == 1


def test_a_202_with_an_empty_body_or_an_errors_object_is_the_documented_answer(tmp_path):
    """202 with no body and 202 with `{"errors": []}` are both acceptance."""
    answers = iter(["", '{"errors": []}'])
    with hostile_server(lambda ex: ex.reply(202, next(answers, ""))) as srv:
        out = send_to(srv.url, tmp_path, mp_rows(2), "--concurrency", "1")
    assert out.returncode == 0, out.stderr
    assert [r["status"] for r in mp_lines(tmp_path)] == ["accepted", "accepted"]


def test_408_from_mparticle_is_retried_with_the_same_bytes(tmp_path):
    """408 Request Timeout from mParticle is transient: retried, then accepted."""
    answers = iter([408])
    with hostile_server(lambda ex: ex.reply(next(answers, 202), "")) as srv:
        out = send_to(srv.url, tmp_path)
    assert out.returncode == 0, out.stderr
    line = mp_lines(tmp_path)[0]
    assert line["status"] == "accepted" and line["attempts"] == "2"
    assert len({ex.body for ex in srv.seen}) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_from_mparticle_stops_the_run_with_exit_3_and_is_never_followed(
        tmp_path, status):
    """A 3xx from mParticle is fatal (exit 3, host named); no request reaches its location."""
    with hostile_server(lambda ex: None) as catcher:
        def respond(ex: Exchange) -> None:
            ex.reply(status, "", headers={"Location": f"{catcher.url}/x?secret=leak"})

        with hostile_server(respond) as srv:
            out = send_to(srv.url, tmp_path, mp_rows(200), "--concurrency", "4")
    assert out.returncode == 3, out.stderr
    assert f"the API answered a redirect to {catcher.host}" in out.stderr, out.stderr
    assert "leak" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    assert "Task exception was never retrieved" not in out.stderr
    assert catcher.seen == []
    assert len(srv.seen) <= 4  # at most the requests already on the wire (--concurrency)
    lines = mp_lines(tmp_path)
    assert len(lines) == 200 and {r["status"] for r in lines} == {"pending"}
