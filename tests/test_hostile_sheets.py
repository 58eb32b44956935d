"""Crafted sheets (decompression bombs, endless lines, huge headers) are refused in bounded memory.

Each file is small on disk; `corrections validate` runs in a child process whose peak resident
memory is measured by a wrapper process (its only child), so other tests cannot blur it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

#: The promise: any input, at most this much memory, and a clear message.
PEAK_LIMIT_MB = 300

_WRAPPER = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=240)
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": proc.returncode, "out": proc.stdout, "err": proc.stderr,
                  "peak_mb": peak_kb / 1024}))
"""


def validate(sheet: Path, *extra: str) -> dict:
    """`corrections validate SHEET` in a child; its exit code, output and peak RSS (MB)."""
    res = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, "-m", "pipeline",
                          "validate", str(sheet), *extra], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    print(f"{sheet.name}: peak {out['peak_mb']:.0f} MB, exit {out['code']}")
    assert "Traceback" not in out["err"], out["err"]
    return out


def csv_with_long_line(path: Path, mib: int) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("event_id,timestamp,set.note\n")
        fh.write("6d3e1c8e-6d55-4d39-a4f7-4d3a7f0a2b11,2026-09-01,")
        chunk = "x" * (1 << 20)
        for _ in range(mib):
            fh.write(chunk)
        fh.write("\n6d3e1c8e-6d55-4d39-a4f7-4d3a7f0a2b12,2026-09-01,fine\n")
    return path


def test_an_endless_csv_line_is_refused_without_holding_it(tmp_path):
    """A 300 MiB line: that row is reported too long, the next row still read, memory bounded."""
    out = validate(csv_with_long_line(tmp_path / "long.csv", 300))
    assert out["code"] == 2
    assert "row 2" in out["out"] and "longer than 8 MiB" in out["out"]
    assert "row 3" not in out["out"]  # the row after it is read and valid
    assert "2 rows: 1 valid, 1 invalid" in out["err"]
    assert out["peak_mb"] <= PEAK_LIMIT_MB


def test_a_csv_header_with_a_million_columns_is_refused_early(tmp_path):
    """A header far wider than any sheet: exit 2 naming the limit, in bounded memory."""
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"set.c{i}" for i in range(1_000_000)) + "\n1,2\n")
    out = validate(path)
    assert out["code"] == 2
    assert f"{path}: the header has more than 1024 columns" in out["err"]
    assert out["peak_mb"] <= PEAK_LIMIT_MB


@pytest.mark.parametrize("sep", [",", ";"])
def test_a_csv_row_with_a_million_cells_is_an_invalid_row(tmp_path, sep):
    """A data row with a million separators is refused as that row; memory stays bounded."""
    path = tmp_path / "ragged.csv"
    path.write_text(sep.join(["event_id", "timestamp", "set.note"]) + "\n"
                    + f"ab{sep}" * 1_000_000 + "\n"
                    + sep.join(["6d3e1c8e-6d55-4d39-a4f7-4d3a7f0a2b12", "2026-09-01", "fine"])
                    + "\n")
    out = validate(path, "--delimiter", sep)
    assert out["code"] == 2
    assert "row 2" in out["out"] and "separators" in out["out"]
    assert out["peak_mb"] <= PEAK_LIMIT_MB


def parquet_bomb(path: Path, kind: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "one huge value":
        table = pa.table({"event_id": ["6d3e1c8e-6d55-4d39-a4f7-4d3a7f0a2b11"],
                          "timestamp": ["2026-09-01"], "set.note": ["x" * (100 << 20)]})
    elif kind == "repeated dictionary value":
        n = 3000
        table = pa.table({"event_id": ["6d3e1c8e-6d55-4d39-a4f7-4d3a7f0a2b11"] * n,
                          "timestamp": ["2026-09-01"] * n,
                          "set.note": pa.array(["y" * (2 << 20)] * n).dictionary_encode()})
    elif kind == "endless list":
        n = 30_000_000
        items = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), pa.repeat(1, n))
        table = pa.table({"event_id": ["6d3e1c8e-6d55-4d39-a4f7-4d3a7f0a2b11"],
                          "timestamp": ["2026-09-01"], "event_attributes": items})
    else:  # many columns
        table = pa.table({f"set.c{i}": [1] for i in range(5_000)})
    pq.write_table(table, path, compression="zstd")
    return path


@pytest.mark.parametrize("kind", ["one huge value", "repeated dictionary value", "endless list",
                                  "many columns"])
def test_a_parquet_decompression_bomb_is_refused_in_bounded_memory(tmp_path, kind):
    """A small Parquet file that would decode to gigabytes: exit 2 saying which limit."""
    path = parquet_bomb(tmp_path / "bomb.parquet", kind)
    assert path.stat().st_size < 2 << 20
    out = validate(path)
    assert out["code"] == 2, out
    if kind == "repeated dictionary value":  # decoded once, each row refused by the cell limit
        assert "row 3001, column 'set.note': the cell holds 2097152 characters, over the " \
            "1048576 limit" in out["out"]
    else:
        assert str(path) in out["err"] and "the limit is" in out["err"]
    assert out["peak_mb"] <= PEAK_LIMIT_MB


def xlsx_bomb(path: Path, kind: str, *, stream: bool = True) -> Path:
    """A minimal valid workbook whose one sheet is a compressed bomb or spans the whole grid."""
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats'
            '.org/package/2006/content-types"><Default Extension="rels" ContentType="applicatio'
            'n/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" Content'
            'Type="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="applic'
            'ation/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override '
            'PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-o'
            'fficedocument.spreadsheetml.worksheet+xml"/></Types>'),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxml'
            'formats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schem'
            'as.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/'
            'workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlforma'
            'ts.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeD'
            'ocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/>'
            '</sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxml'
            'formats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schem'
            'as.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="workshe'
            'ets/sheet1.xml"/></Relationships>'),
    }
    head = ('<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlfo'
            'rmats.org/spreadsheetml/2006/main"><sheetData>'
            '<row r="1"><c r="A1" t="inlineStr"><is><t>event_id</t></is></c>'
            '<c r="B1" t="inlineStr"><is><t>timestamp</t></is></c></row>')
    tail = "</sheetData></worksheet>"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, text in parts.items():
            zf.writestr(name, text)
        body = [head.encode()]
        if kind == "compressed bomb":
            row = (b'<row><c t="inlineStr"><is><t>6d3e1c8e-6d55-4d39-a4f7-4d3a7f0a2b11</t>'
                   b'</is></c><c t="inlineStr"><is><t>2026-09-01</t></is></c></row>')
            body += [row * 10_000] * (200 if stream else 60)
        else:  # two cells at opposite corners of the grid
            body.append(b'<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>')
        body.append(tail.encode())
        if stream:
            with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as fh:
                for part in body:
                    fh.write(part)
        else:
            zf.writestr("xl/worksheets/sheet1.xml", b"".join(body))
    return path


def lie_about_size(path: Path, member: str, claimed: int) -> None:
    """Patch the zip directory so `member` claims to expand to `claimed` bytes only."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_len = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + name_len] == member.encode():
            data[at + 24:at + 28] = claimed.to_bytes(4, "little")
            path.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{member} not in {path}")


def test_an_xlsx_part_that_lies_about_its_size_is_refused(tmp_path):
    """A zip directory claiming a small part that really expands to hundreds of MB: refused."""
    path = xlsx_bomb(tmp_path / "bomb.xlsx", "compressed bomb", stream=False)
    lie_about_size(path, "xl/worksheets/sheet1.xml", 4096)
    out = validate(path)
    assert out["code"] == 2, out
    assert str(path) in out["err"] and "damaged" in out["err"]
    assert out["peak_mb"] <= PEAK_LIMIT_MB


@pytest.mark.parametrize("kind", ["compressed bomb", "whole grid"])
def test_an_xlsx_bomb_is_refused_before_it_is_opened(tmp_path, kind):
    """A workbook that expands past the limits is refused from its zip directory or extent."""
    path = xlsx_bomb(tmp_path / "bomb.xlsx", kind)
    assert path.stat().st_size < 2 << 20
    out = validate(path)
    assert out["code"] == 2, out
    assert str(path) in out["err"] and "limit" in out["err"]
    assert out["peak_mb"] <= PEAK_LIMIT_MB
