"""Credentials never leave the Authorization header: not via echoing servers, URLs or proxies.

Servers here are stdlib HTTP servers on loopback (tests/hostile.py) that echo the request's
headers back in every form a credential can take; afterwards every byte the run left behind
(stdout, stderr, report, checkpoint with its WAL and shared memory, logs) is searched.
"""

from __future__ import annotations

import base64
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, read_report, run_cli, write_csv
from hostile import MP_KEY, MP_SECRET, TOKEN, Exchange, hostile_server, mutation_ok

FAST = ["--backoff-base", "0.01", "--backoff-max", "0.02", "--max-attempts", "2"]
PAIR = f"{MP_KEY}:{MP_SECRET}"
B64 = base64.b64encode(PAIR.encode()).decode()
SECRET_FORMS = {
    "token": TOKEN, "token key part": TOKEN.split(".")[0],
    "token secret part": TOKEN.split(".")[1], "mparticle key": MP_KEY,
    "mparticle secret": MP_SECRET, "key:secret": PAIR, "base64 key:secret": B64,
}
EVENT = "518f47a5-985c-4482-8a85-21704f0d50d2"


def echo(ex: Exchange) -> str:
    """Every credential form a careless server could derive from the request's headers."""
    auth = ex.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    parts = [f"{k}: {v}" for k, v in ex.headers.items()]
    if scheme == "Bearer":
        key, _, secret = value.partition(".")
        parts += [f"api_key={key}", f"server_token={secret}", f"token%3D{value}"]
    elif scheme == "Basic":
        pair = base64.b64decode(value).decode()
        key, _, secret = pair.partition(":")
        parts += [f"credentials={pair}", f"key={key}", f"secret={secret}", value.rstrip("=")]
    return " | ".join(parts)


def leaks(texts: dict[str, bytes]) -> list[tuple[str, str]]:
    """(where, which secret form) for each secret form found anywhere."""
    return [(where, name) for where, data in texts.items()
            for name, form in SECRET_FORMS.items() if form.encode() in data]


def everything(out: Any, folder: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
             if p.is_file()}
    return {"stdout": out.stdout.encode(), "stderr": out.stderr.encode(), **files}


def usermaven_echo(ex: Exchange) -> None:
    """Lookups find an event carrying the echoed headers; mutations answer 422 or 500 echoing
    them (in the message, in a header and in a field the client does not read)."""
    sent = ex.json() or {}
    if ex.path.endswith("/lookup"):
        ex.reply(200, {"data": [{
            "event_id": EVENT, "event_type": sent["event_type"],
            "event_attributes": {sent["attribute_key"]: sent["attribute_value"],
                                 "debug": echo(ex)},
            "_timestamp": "2026-09-10 10:00:00", "_is_deleted": 0}]})
        return
    status = 422 if sent["event_attributes"].get("final_price") == "1.00" else 500
    ex.reply(status, {"error": f"cannot apply: {echo(ex)}", "request": echo(ex)},
             headers={"Retry-After": "0", "X-Debug": echo(ex)[:200]})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_server_echoing_the_token_gets_it_written_nowhere(tmp_path, log_format):
    """Echoed token, key and secret parts appear in no output, log, report or checkpoint byte."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1",
         "event_time": "2026-09", "set.final_price": "1.00"},
        {"event_id": "407dfe54-d8e9-4aa1-9744-d89e5f6107b0", "timestamp": "2026-09-27",
         "set.final_price": "2.00"},
    ])
    with hostile_server(usermaven_echo) as srv:
        out = run_cli(["apply", str(sheet), "--api-url", srv.url, "--verbose",
                       "--log-format", log_format, *FAST],
                      env={"USERMAVEN_TOKEN": TOKEN}, timeout=60)
        report_out = run_cli(["report", "--checkpoint", str(tmp_path / "s.checkpoint.sqlite"),
                              "--out", str(tmp_path / "again.audit.csv")], timeout=60)
    assert out.returncode == 1, out.stderr
    assert report_out.returncode == 0, report_out.stderr
    assert any("Bearer" in ex.headers.get("authorization", "") for ex in srv.seen)
    lines = {r["row_number"]: r for r in read_report(tmp_path / "s.audit.csv")}
    assert lines["2"]["status"] == "rejected" and "[redacted]" in lines["2"]["error"]
    assert "[redacted]" in lines["2"]["attributes_before"]
    assert lines["3"]["status"] == "failed" and lines["3"]["http_status"] == "500"
    assert leaks(everything(out, tmp_path)) == []


def mparticle_echo(ex: Exchange) -> None:
    """A 400 for the first batch and a 500 for the second, both echoing the credentials."""
    status = 400 if b'"C-0"' in ex.body else 500
    ex.reply(status, {"errors": [{"code": "BAD_REQUEST", "message": echo(ex)}]},
             headers={"X-mp-rate-limit-exceeded": echo(ex)[:200]})


def test_a_server_echoing_basic_credentials_gets_them_written_nowhere(tmp_path):
    """mParticle's key, secret, key:secret and its base64 form, echoed, are stored nowhere."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": f"00000000-0000-4000-8000-00000000000{i}",
         "timestamp": "2026-11-20T10:00:00Z", "identity.customer_id": f"C-{i}",
         "set.final_price": "1.00"} for i in range(2)])
    with hostile_server(mparticle_echo) as srv:
        out = run_cli(["apply", str(sheet), "--target", "mparticle", "--mparticle-url", srv.url,
                       "--verbose", "--log-format", "json", "--concurrency", "1", *FAST],
                      env={"MPARTICLE_API_KEY": MP_KEY, "MPARTICLE_API_SECRET": MP_SECRET},
                      timeout=60)
    assert out.returncode == 1, out.stderr
    lines = [r for r in read_report(tmp_path / "s.audit.csv") if r["target"] == "mparticle"]
    assert sorted(r["status"] for r in lines) == ["failed", "rejected"]
    assert all("[redacted]" in r["error"] for r in lines), lines
    assert leaks(everything(out, tmp_path)) == []


# -- secrets inside URLs ---------------------------------------------------------------------


URL_SECRETS = {
    "userinfo": ("http://admin:{secret}@127.0.0.1:{port}", "credentials"),
    "query token": ("http://127.0.0.1:{port}/?token={secret}", "query"),
    "query api_key": ("http://127.0.0.1:{port}?api_key={secret}", "query"),
    "fragment": ("http://127.0.0.1:{port}/#{secret}", "fragment"),
}
URL_SECRET = "Zz9-url-secret-value"


@pytest.mark.parametrize("where", ["--api-url", "USERMAVEN_API_URL", "--mparticle-url",
                                   "MPARTICLE_API_URL"])
@pytest.mark.parametrize("kind", list(URL_SECRETS))
def test_an_api_url_carrying_a_secret_is_refused_without_echoing_it(tmp_path, where, kind):
    """Userinfo, a query or a fragment in an API URL: exit 2, nothing sent, secret not shown."""
    shape, word = URL_SECRETS[kind]
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": EVENT, "timestamp": "2026-09-27", "identity.customer_id": "C-1",
         "set.final_price": "1.00"}])
    with hostile_server(lambda ex: ex.reply(500, "")) as srv:
        url = shape.format(secret=URL_SECRET, port=srv.url.rsplit(":", 1)[1])
        mparticle = "mparticle" in where.lower()
        args = ["apply", str(sheet), *FAST]
        env = {"USERMAVEN_TOKEN": TOKEN, "MPARTICLE_API_KEY": MP_KEY,
               "MPARTICLE_API_SECRET": MP_SECRET}
        if mparticle:
            args += ["--target", "mparticle"]
        if where.startswith("--"):
            args += [where, url]
        else:
            env[where] = url
        out = run_cli(args, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    assert word in out.stderr and "Traceback" not in out.stderr
    assert URL_SECRET not in out.stdout + out.stderr
    assert srv.seen == []
    assert not (tmp_path / "s.checkpoint.sqlite").exists()


@pytest.mark.parametrize("which", ["sheet", "report"])
def test_s3_credentials_in_a_sheet_or_report_url_are_never_shown_or_stored(
        tmp_path, sandbox, which):
    """`s3://KEY:SECRET@bucket/...`: messages and files show `***@`, never the key or secret."""
    key, secret = "AKIAEXAMPLEKEY7", "wJalrXUtnFEMI-example-SECRET"
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": EVENT, "timestamp": "2026-09-27", "set.final_price": "3.00"}])
    remote = f"s3://{key}:{secret}@bucket/dir/{'s.csv' if which == 'sheet' else 'r.csv'}"
    args = (["apply", remote, "--checkpoint", str(tmp_path / "cp.sqlite")] if which == "sheet"
            else ["apply", str(sheet), "--report", remote])
    env = {"USERMAVEN_TOKEN": TOKEN, "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_EC2_METADATA_DISABLED": "true"}
    out = run_cli([*args, "--api-url", sandbox.url, "--log-format", "json", "--verbose"],
                  env=env, timeout=120)
    assert out.returncode != 0
    assert "s3://***@bucket/dir/" in out.stderr, out.stderr
    texts = everything(out, tmp_path)
    assert [w for w, data in texts.items() if key.encode() in data or secret.encode() in data] \
        == []


# -- proxies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_proxy_variables_never_apply_to_loopback_apis(tmp_path, host):
    """HTTP_PROXY/HTTPS_PROXY/ALL_PROXY set, NO_PROXY empty: loopback APIs are reached directly,
    so neither the token nor mParticle's credentials ever reach the proxy."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": EVENT, "timestamp": "2026-09-27", "identity.customer_id": "C-1",
         "set.final_price": "1.00"}])

    def api(ex: Exchange) -> None:
        if ex.path.startswith("/v1/"):
            mutation_ok(ex)
        else:
            ex.reply(202, "")

    with hostile_server(lambda ex: ex.reply(502, "proxy")) as proxy, \
            hostile_server(api) as srv:
        url = srv.url.replace("127.0.0.1", host)
        env = {"USERMAVEN_TOKEN": TOKEN, "MPARTICLE_API_KEY": MP_KEY,
               "MPARTICLE_API_SECRET": MP_SECRET, "NO_PROXY": "", "no_proxy": ""}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = proxy.url
        out = run_cli(["apply", str(sheet), "--api-url", url, "--target", "usermaven",
                       "--target", "mparticle", "--mparticle-url", url, *FAST],
                      env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert proxy.seen == []
    assert sorted(ex.path.split("/")[1] for ex in srv.seen) == ["v1", "v2"]


# -- dependencies ----------------------------------------------------------------------------


def test_the_http_library_is_pinned_above_its_known_client_vulnerabilities():
    """aiohttp ≥ 3.13.4 (CVE-2025-69223, CVE-2026-22815) is required, and installed."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(d) for d in project["dependencies"]
              if Requirement(d).name == "aiohttp"]
    assert len(wanted) == 1
    spec = wanted[0].specifier
    assert not spec.contains("3.13.3") and spec.contains("3.13.4")
    assert spec.contains(version("aiohttp"))
