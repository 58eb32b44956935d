"""Answers from broken or hostile servers never count as success, never crash, never hang.

Every server here is a small stdlib HTTP server on loopback (tests/hostile.py) that answers
the pipeline's real requests with what a broken deployment, a proxy page or a hostile host
might send.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, read_report, run_cli, write_csv
from hostile import TOKEN, Exchange, hostile_server, mutation_ok

EVENT = "518f47a5-985c-4482-8a85-21704f0d50d2"
OTHER = "407dfe54-d8e9-4aa1-9744-d89e5f6107b0"
FAST = ["--backoff-base", "0.01", "--backoff-max", "0.02"]


def id_rows(n: int = 1) -> list[dict[str, str]]:
    """Rows naming their event by id: the only request is the mutation."""
    return [{"event_id": f"00000000-0000-4000-8000-{i:012d}" if i else EVENT,
             "timestamp": "2026-09-27", "set.final_price": f"{i}.99"} for i in range(n)]


def apply_against(url: str, tmp_path: Path, rows: list[dict[str, str]] | None = None,
                  *extra: str, timeout: float = 60) -> Any:
    sheet = tmp_path / "s.csv"
    if not sheet.exists():
        write_csv(sheet, rows or id_rows())
    return run_cli(["apply", str(sheet), "--api-url", url, "--max-attempts", "2", *FAST,
                    *extra], env={"USERMAVEN_TOKEN": TOKEN}, timeout=timeout)


def report(tmp_path: Path) -> list[dict[str, str]]:
    return read_report(tmp_path / "s.audit.csv")


# -- answers that are not proof of a mutation ------------------------------------------------


BAD_PROOFS = {
    "another event": lambda ex: mutation_ok(ex, event_id=OTHER),
    "no event id": lambda ex: mutation_ok(ex, event_id=None),
    "no mutation id": lambda ex: mutation_ok(ex, mutation_id=None),
    "status 0": lambda ex: mutation_ok(ex, status=0),
    "status as text": lambda ex: mutation_ok(ex, status="1"),
    "not json": lambda ex: ex.reply(200, "<html><body>OK</body></html>",
                                    headers={"Content-Type": "text/html"}),
    "json list": lambda ex: ex.reply(200, [{"status": 1}]),
}


@pytest.mark.parametrize("answer", list(BAD_PROOFS))
def test_a_200_that_is_not_the_documented_proof_is_a_failed_attempt_retried_under_the_same_key(
        tmp_path, answer):
    """A 200 naming another event, or lacking status 1 / mutation_id / JSON, is never `applied`."""
    with hostile_server(BAD_PROOFS[answer]) as srv:
        first = apply_against(srv.url, tmp_path)
        assert first.returncode == 1, first.stderr
        assert "Traceback" not in first.stderr
        line = report(tmp_path)[0]
        assert line["status"] == "failed" and line["mutation_id"] == ""
        assert line["attempts"] == "2" and len(srv.seen) == 2
        assert "not proof" in line["error"], line["error"]
        srv.respond = mutation_ok
        second = apply_against(srv.url, tmp_path)
    assert second.returncode == 0, second.stderr
    line = report(tmp_path)[0]
    assert line["status"] == "applied" and line["mutation_id"].startswith("mut-")
    assert len({ex.json()["idempotency_key"] for ex in srv.seen}) == 1


def test_the_event_id_in_the_proof_is_compared_without_regard_to_case(tmp_path):
    """The API may spell the UUID in upper case: that still names the event sent."""
    with hostile_server(lambda ex: mutation_ok(ex, event_id=EVENT.upper())) as srv:
        out = apply_against(srv.url, tmp_path)
    assert out.returncode == 0, out.stderr
    assert report(tmp_path)[0]["status"] == "applied"


# -- 408 -------------------------------------------------------------------------------------


def test_408_is_retried_under_the_same_key_then_applied(tmp_path):
    """408 Request Timeout is transient: retried (same key), never `rejected`."""
    answers = iter([408, 408])

    def respond(ex: Exchange) -> None:
        status = next(answers, 200)
        if status == 200:
            mutation_ok(ex)
        else:
            ex.reply(status, {"error": "request timeout"})

    with hostile_server(respond) as srv:
        out = apply_against(srv.url, tmp_path, None, "--max-attempts", "3")
    assert out.returncode == 0, out.stderr
    line = report(tmp_path)[0]
    assert line["status"] == "applied" and line["attempts"] == "3"
    assert len({ex.json()["idempotency_key"] for ex in srv.seen}) == 1


def test_408_until_attempts_run_out_leaves_the_row_failed_not_rejected(tmp_path):
    """Persistent 408s end the row `failed` (retried by the next run), with the status kept."""
    with hostile_server(lambda ex: ex.reply(408, "")) as srv:
        out = apply_against(srv.url, tmp_path)
    assert out.returncode == 1, out.stderr
    line = report(tmp_path)[0]
    assert line["status"] == "failed" and line["http_status"] == "408"
    assert len(srv.seen) == 2


# -- redirects -------------------------------------------------------------------------------


def lookup_rows(n: int) -> list[dict[str, str]]:
    return [{"event_type": "order_completed", "lookup_key": "order_id",
             "lookup_value": f"ORD-{i}", "event_time": "2026-09", "set.final_price": "1.00"}
            for i in range(n)]


def redirect_to(target: str, status: int):
    def respond(ex: Exchange) -> None:
        ex.reply(status, "", headers={"Location": f"{target}/steal?token=leak-{status}#frag"})
    return respond


def assert_clean_stop(out: Any, host: str) -> None:
    assert out.returncode == 3, out.stderr
    assert f"the API answered a redirect to {host}" in out.stderr, out.stderr
    assert "leak-" not in out.stderr + out.stdout and "steal" not in out.stderr
    assert "Traceback" not in out.stderr
    assert "Task exception was never retrieved" not in out.stderr


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("phase", ["mutation", "lookup"])
def test_a_redirect_stops_the_run_with_exit_3_and_is_never_followed(tmp_path, status, phase):
    """A 3xx from the API is fatal (exit 3, host named, report written); nothing follows it."""
    rows = id_rows(200) if phase == "mutation" else lookup_rows(200)
    with hostile_server(lambda ex: None) as catcher, \
            hostile_server(redirect_to(catcher.url, status)) as srv:
        out = apply_against(srv.url, tmp_path, rows, "--concurrency", "4")
    assert_clean_stop(out, catcher.host)
    assert catcher.seen == []
    assert len(srv.seen) <= 4  # at most the requests already on the wire (--concurrency)
    lines = report(tmp_path)
    assert len(lines) == 200
    assert {r["status"] for r in lines} <= {"pending"}, {r["status"] for r in lines}


# -- slow and huge answers -------------------------------------------------------------------


def drip_status_line(ex: Exchange) -> None:
    """A status line (and the rest) one byte a second: never silent long enough for a
    per-read timeout, never finished."""
    ex.drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}", 1.0)


def drip_body(ex: Exchange) -> None:
    """Headers at once, then a JSON body one byte every half second."""
    sent = ex.json()
    body = json.dumps({"status": 1, "mutation_id": "m-1", "event_id": sent["event_id"],
                       "pad": "x" * 400}).encode()
    ex.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
             + str(len(body)).encode() + b"\r\n\r\n")
    ex.drip(body, 0.5)


@pytest.mark.parametrize("respond", [drip_status_line, drip_body],
                         ids=["status line", "body"])
def test_an_answer_dripped_a_byte_at_a_time_cannot_hold_a_request_past_the_timeout(
        tmp_path, respond):
    """--timeout bounds the whole exchange: a dripping server gets a timed-out, retryable row."""
    with hostile_server(respond) as srv:
        # without a total deadline one attempt would last minutes: the subprocess timeout
        # (60 s) is the hang guard, not a speed measurement
        out = apply_against(srv.url, tmp_path, None, "--timeout", "2", timeout=60)
    assert out.returncode in (1, 3), out.stderr
    assert "Traceback" not in out.stderr
    line = report(tmp_path)[0]
    assert line["status"] in ("failed", "pending") and line["mutation_id"] == ""
    assert "timed out" in line["error"] + out.stderr
    assert len(srv.seen) >= 1


MEASURE = ("import resource, subprocess, sys\n"
           "done = subprocess.run(sys.argv[2:])\n"
           "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
           "open(sys.argv[1], 'w').write(str(peak))\n"
           "sys.exit(done.returncode)\n")


def apply_measured(url: str, tmp_path: Path, *extra: str) -> tuple[Any, int]:
    """An `apply` run in a subprocess, with its peak resident memory in MB."""
    sheet = write_csv(tmp_path / "s.csv", id_rows())
    peak_file = tmp_path / "peak.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}
    env["USERMAVEN_TOKEN"] = TOKEN
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(peak_file), sys.executable, "-m", "pipeline",
         "apply", str(sheet), "--api-url", url, "--max-attempts", "2", *FAST, *extra],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    return out, int(peak_file.read_text()) // 1024


def huge(status: int, encoding: str | None = None):
    """A 300 MB body, streamed in 1 MB pieces (gzip-compressed to ~300 KB if asked)."""
    def respond(ex: Exchange) -> None:
        size = 300 * 1024 * 1024
        headers = {"Content-Type": "application/json"}
        if encoding == "gzip":
            body = gzip.compress(b'{"error": "' + b" " * size + b'"}', 9)
            headers["Content-Encoding"] = "gzip"
            ex.reply(status, body, headers=headers)
            return
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        if encoding != "chunked-length":
            head += f"Content-Length: {size}\r\n"
        ex.write((head + "Connection: close\r\n\r\n").encode())
        piece = b"x" * (1024 * 1024)
        for _ in range(300):
            if not ex.write(piece):
                return
    return respond


@pytest.mark.parametrize("status,encoding", [(500, None), (200, None), (422, "chunked-length"),
                                             (200, "gzip"), (500, "gzip")],
                         ids=["500", "200", "422 without length", "200 gzip bomb",
                              "500 gzip bomb"])
def test_a_huge_or_compressed_answer_is_capped_and_memory_stays_bounded(
        tmp_path, status, encoding):
    """A 300 MB answer (or a gzip bomb of one) is not read past the cap: a transient failure,
    and the run's peak memory stays far below the answer's size."""
    with hostile_server(huge(status, encoding)) as srv:
        out, peak_mb = apply_measured(srv.url, tmp_path)
    assert out.returncode in (1, 3), out.stderr
    assert "Traceback" not in out.stderr
    line = report(tmp_path)[0]
    assert line["status"] in ("failed", "pending") and line["mutation_id"] == ""
    assert "larger than 4 MB" in line["error"] + out.stderr, line["error"]
    print(f"peak memory: {peak_mb} MB")
    assert peak_mb < 200, peak_mb


def test_the_client_asks_for_uncompressed_answers(tmp_path):
    """Requests say `Accept-Encoding: identity`: nothing compressed is invited."""
    with hostile_server(mutation_ok) as srv:
        out = apply_against(srv.url, tmp_path)
    assert out.returncode == 0, out.stderr
    assert [ex.headers.get("accept-encoding") for ex in srv.seen] == ["identity"]


def test_a_small_gzip_answer_sent_anyway_is_still_read(tmp_path):
    """A server that compresses although asked not to: a small answer is inflated and counts."""
    def respond(ex: Exchange) -> None:
        sent = ex.json()
        body = json.dumps({"status": 1, "mutation_id": "m-gz", "event_id": sent["event_id"]})
        ex.reply(200, gzip.compress(body.encode()),
                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    with hostile_server(respond) as srv:
        out = apply_against(srv.url, tmp_path)
    assert out.returncode == 0, out.stderr
    assert report(tmp_path)[0]["mutation_id"] == "m-gz"


def test_a_redirect_during_verify_stops_it_with_exit_3(tmp_path):
    """`verify` meets a 3xx like `apply` does: exit 3, the host named, nothing followed."""
    def api(ex: Exchange) -> None:
        sent = ex.json()
        if not ex.path.endswith("/lookup"):
            mutation_ok(ex)
            return
        ex.reply(200, {"data": [{
            "event_id": EVENT, "event_type": sent["event_type"],
            "event_attributes": {sent["attribute_key"]: sent["attribute_value"]},
            "_timestamp": "2026-09-10 10:00:00", "_is_deleted": 0}]})

    with hostile_server(lambda ex: None) as catcher, hostile_server(api) as srv:
        applied = apply_against(srv.url, tmp_path, lookup_rows(1))
        assert applied.returncode == 0, applied.stderr
        srv.respond = redirect_to(catcher.url, 302)
        out = run_cli(["verify", "--checkpoint", str(tmp_path / "s.checkpoint.sqlite"),
                       "--api-url", srv.url, "--wait", "0"],
                      env={"USERMAVEN_TOKEN": TOKEN}, timeout=60)
    assert_clean_stop(out, catcher.host)
    assert catcher.seen == []
