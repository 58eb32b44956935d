"""Sheets from Excel and from object storage, end to end against the sandbox."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import boto3
import openpyxl
import pytest
from conftest import REPO, read_report, run_cli

from pipeline.sandbox.server import SANDBOX_TOKEN

BUCKET = "corrections-test"
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
          "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3-compatible server (moto) on a loopback port, for the session."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **{
        "aws_access_key_id": "test", "aws_secret_access_key": "test",
        "region_name": "us-east-1"})
    s3.create_bucket(Bucket=BUCKET)
    yield s3
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def cli_env(endpoint: str | None = None) -> dict[str, str]:
    env = {"USERMAVEN_TOKEN": SANDBOX_TOKEN, **S3_ENV}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def write_xlsx(path, header, rows, sheet_title="fixes", extra_sheet=True):
    wb = openpyxl.Workbook()
    if extra_sheet:
        wb.active.title = "notes"
        wb.active.append(["this sheet is not the corrections"])
        ws = wb.create_sheet(sheet_title)
    else:
        ws = wb.active
        ws.title = sheet_title
    ws.append(header)
    for row in rows:
        ws.append(row)
    wb.save(path)
    wb.close()


def test_an_excel_sheet_runs_end_to_end_with_sheet_name(sandbox, tmp_path):
    """An .xlsx export (second worksheet chosen by --sheet-name) applies like a CSV; text
    cells stay text and number cells arrive as JSON numbers."""
    path = tmp_path / "fixes.xlsx"
    write_xlsx(path, ["event_type", "lookup_key", "lookup_value", "event_time",
                      "set.final_price", "set.items"],
               [["order_completed", "order_id", "ORD-1002", "2026-09", "54.50", 3],
                ["order_completed", "order_id", "ORD-1004", "2026-09", "21.99", 1]])
    res = run_cli(["apply", str(path), "--sheet-name", "fixes", "--api-url", sandbox.url],
                  env=cli_env())
    assert res.returncode == 0, res.stdout + res.stderr
    lines = read_report(tmp_path / "fixes.audit.csv")
    assert [r["status"] for r in lines] == ["applied", "applied"]
    attrs = sandbox.store.get("407dfe54-d8e9-4aa1-9744-d89e5f6107b0").attributes
    assert attrs["final_price"] == "54.50" and attrs["items"] == 3


def test_an_unknown_worksheet_name_is_a_clear_error(tmp_path):
    """--sheet-name that does not exist: exit 2 naming the sheets there are."""
    path = tmp_path / "fixes.xlsx"
    write_xlsx(path, ["event_id", "timestamp", "set.a"], [])
    res = run_cli(["validate", str(path), "--sheet-name", "nope"])
    assert res.returncode == 2
    assert "fixes" in res.stderr and "Traceback" not in res.stderr


def test_an_s3_sheet_runs_end_to_end_and_the_report_lands_beside_it(sandbox, bucket,
                                                                   s3_endpoint, tmp_path):
    """apply s3://bucket/key.csv: read from the bucket, report written back to the bucket."""
    body = ("event_type,lookup_key,lookup_value,event_time,set.final_price\n"
            "order_completed,order_id,ORD-1002,2026-09,54.50\n")
    bucket.put_object(Bucket=BUCKET, Key="nightly/fixes.csv", Body=body.encode())
    res = run_cli(["apply", f"s3://{BUCKET}/nightly/fixes.csv", "--api-url", sandbox.url],
                  env=cli_env(s3_endpoint), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    report = bucket.get_object(Bucket=BUCKET, Key="nightly/fixes.audit.csv")["Body"].read()
    assert b",applied," in report
    assert (tmp_path / "fixes.checkpoint.sqlite").exists()
    again = run_cli(["apply", f"s3://{BUCKET}/nightly/fixes.csv", "--api-url", sandbox.url],
                    env=cli_env(s3_endpoint), cwd=tmp_path)
    assert again.returncode == 0 and "0 mutations" in again.stdout


def test_plan_and_report_paths_may_be_s3_urls(sandbox, bucket, s3_endpoint, tmp_path):
    """plan --report s3://… and report --out s3://… write objects in the bucket."""
    local = tmp_path / "fixes.csv"
    local.write_text("event_type,lookup_key,lookup_value,event_time,set.final_price\n"
                     "order_completed,order_id,ORD-1002,2026-09,54.50\n", encoding="utf-8")
    res = run_cli(["plan", str(local), "--api-url", sandbox.url, "--report",
                   f"s3://{BUCKET}/plans/fixes.plan.csv"], env=cli_env(s3_endpoint))
    assert res.returncode == 0, res.stderr
    plan = bucket.get_object(Bucket=BUCKET, Key="plans/fixes.plan.csv")["Body"].read()
    assert b",planned," in plan
    run_cli(["apply", str(local), "--api-url", sandbox.url], env=cli_env(s3_endpoint))
    res = run_cli(["report", "--checkpoint", str(tmp_path / "fixes.checkpoint.sqlite"),
                   "--out", f"s3://{BUCKET}/audit/fixes.parquet"], env=cli_env(s3_endpoint))
    assert res.returncode == 0, res.stderr
    assert bucket.head_object(Bucket=BUCKET, Key="audit/fixes.parquet")["ContentLength"] > 0


def test_a_missing_s3_object_is_a_sheet_error_with_exit_2(bucket, s3_endpoint, tmp_path):
    """A sheet URL that does not exist: exit 2, the URL named, no traceback."""
    res = run_cli(["validate", f"s3://{BUCKET}/nope.csv"], env=cli_env(s3_endpoint))
    assert res.returncode == 2
    assert "nope.csv" in res.stderr and "Traceback" not in res.stderr


def test_a_remote_sheet_is_not_left_on_local_disk(bucket, s3_endpoint, tmp_path):
    """The local copy of a remote sheet is temporary."""
    bucket.put_object(Bucket=BUCKET, Key="x/fixes.csv", Body=b"event_id,timestamp,set.a\n")
    before = set(os.listdir(tmp_path))
    res = run_cli(["validate", f"s3://{BUCKET}/x/fixes.csv"], env=cli_env(s3_endpoint),
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert set(os.listdir(tmp_path)) == before
    assert REPO.exists()
