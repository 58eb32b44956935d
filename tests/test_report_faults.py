"""The report's destination: checked before anything is sent; a late failure says where."""

from __future__ import annotations

import shutil

from conftest import read_report, run_cli, write_csv
from fakeapi import FakeApi, order_rows, working

ENV = {"USERMAVEN_TOKEN": "fake-key.fake-token"}


def test_a_report_path_under_a_file_is_refused_before_anything_is_sent(tmp_path):
    """`--report` under a path whose parent is a file: exit 2, nothing sent, the path named."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(5))
    (tmp_path / "plain.txt").write_text("not a directory\n")
    report = tmp_path / "plain.txt" / "audit.csv"
    with FakeApi(working) as api:
        res = run_cli(["apply", str(sheet), "--api-url", api.url, "--checkpoint",
                       str(tmp_path / "cp.sqlite"), "--report", str(report)], env=ENV)
        assert api.count() == 0
    assert res.returncode == 2, res.stderr
    assert str(tmp_path / "plain.txt") in res.stderr and "not a directory" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_report_path_that_is_a_directory_is_refused_before_anything_is_sent(tmp_path):
    """`--report` naming an existing directory: exit 2, nothing sent, the path named."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(5))
    (tmp_path / "out.csv").mkdir()
    with FakeApi(working) as api:
        res = run_cli(["apply", str(sheet), "--api-url", api.url, "--checkpoint",
                       str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "out.csv")],
                      env=ENV)
        assert api.count() == 0
    assert res.returncode == 2, res.stderr
    assert str(tmp_path / "out.csv") in res.stderr


def test_a_report_that_cannot_be_written_after_sending_names_the_path_and_exits_4(tmp_path):
    """The report's folder turns into a file while the run sends: exit 4 (not 2, which means
    nothing was sent), the path named, and `corrections report` re-emits everything."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(12))
    folder = tmp_path / "reports"
    folder.mkdir()

    def handler(path: str, body):
        if path == "/v1/event-mutation" and folder.is_dir():
            shutil.rmtree(folder)
            folder.write_text("a file now\n")
        return working(path, body)

    with FakeApi(handler) as api:
        res = run_cli(["apply", str(sheet), "--api-url", api.url, "--checkpoint",
                       str(tmp_path / "cp.sqlite"), "--report", str(folder / "audit.csv")],
                      env=ENV)
        assert api.count("/v1/event-mutation") >= 12
    assert res.returncode == 4, res.stderr
    assert str(folder / "audit.csv") in res.stderr
    assert "corrections report" in res.stderr
    assert "Traceback" not in res.stderr
    again = run_cli(["report", "--checkpoint", str(tmp_path / "cp.sqlite"), "--out",
                     str(tmp_path / "again.csv")])
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in read_report(tmp_path / "again.csv")} == {"applied"}
