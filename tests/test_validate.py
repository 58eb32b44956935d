"""Offline validation of sheet rows: the rules, the row keys, and properties over random sheets."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import SheetError
from pipeline.model import Correction, RowProblem, SheetDefaults, Window
from pipeline.sheet import KNOWN_COLUMNS, RawRow
from pipeline.validate import MAX_ATTRIBUTES_BYTES, validate, validate_batches

UTC = dt.UTC
EID = "550e8400-e29b-41d4-a716-446655440000"
D = SheetDefaults()
LOOKUP = {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1",
          "event_time": "2026-03-10T14:30:00Z", "set.price": "149.90"}


def check(cells: dict, defaults: SheetDefaults = D, row: int = 2) -> Correction | RowProblem:
    return validate(RawRow(row, cells), defaults)


def ok(cells: dict, defaults: SheetDefaults = D) -> Correction:
    result = check(cells, defaults)
    assert isinstance(result, Correction), str(result)
    return result


def bad(cells: dict, defaults: SheetDefaults = D) -> RowProblem:
    result = check(cells, defaults)
    assert isinstance(result, RowProblem), result
    assert result.row_number == 2
    return result


def direct(**extra) -> dict:
    return {"event_id": EID, "timestamp": "2026-03-10T14:30:00Z", "set.price": "149.90", **extra}


def write_csv(tmp_path: Path, rows: list[list[str]], name: str = "s.csv") -> Path:
    path = tmp_path / name
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def results(path: Path, defaults: SheetDefaults = D, **kwargs) -> list:
    return [r for batch in validate_batches(path, defaults, **kwargs) for r in batch]


# --------------------------------------------------------------------------- event_id rows


def test_event_id_row_becomes_a_direct_correction():
    """A row with event_id and timestamp needs no lookup and keeps CSV text values."""
    c = ok(direct())
    assert c.event_id == EID and not c.needs_lookup
    assert c.timestamp == dt.datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
    assert c.attributes == {"price": "149.90"} and c.merge_mode == "merge"
    assert c.row_number == 2 and c.window is None and c.lookup_key is None


@pytest.mark.parametrize("text", [EID.upper(), "{" + EID + "}", EID.replace("-", ""),
                                  f"  {EID} "])
def test_event_id_is_normalised_to_lower_case_canonical_form(text):
    """Upper case, braces, missing hyphens and surrounding spaces normalise to one form."""
    assert ok(direct(event_id=text)).event_id == EID


def test_bad_event_id_is_a_problem():
    """An event_id that is not a UUID is a problem on the event_id column."""
    p = bad(direct(event_id="ORD-123"))
    assert p.column == "event_id" and "not a UUID" in p.message and "row 2" in str(p)


def test_event_id_needs_a_timestamp():
    """A row with event_id and no timestamp is a problem naming the timestamp column."""
    p = bad({"event_id": EID, "set.price": "1"})
    assert p.column == "timestamp" and "calendar month" in p.message


def test_event_time_stands_in_for_a_missing_timestamp():
    """With event_id, event_time is used when timestamp is empty."""
    c = ok({"event_id": EID, "event_time": "2026-03-10", "set.x": "1"})
    assert c.timestamp == dt.datetime(2026, 3, 10, tzinfo=UTC)


def test_unparseable_timestamp_is_a_problem():
    """A timestamp that is not ISO 8601 is a problem on its column."""
    p = bad(direct(timestamp="10/03/2026"))
    assert p.column == "timestamp" and "ISO 8601" in p.message


def test_timestamp_without_zone_is_utc_and_offsets_are_converted():
    """A time without zone is UTC; a time with an offset is converted to UTC."""
    assert ok(direct(timestamp="2026-03-10T14:30:00")).timestamp == dt.datetime(
        2026, 3, 10, 14, 30, tzinfo=UTC)
    assert ok(direct(timestamp="2026-03-10T14:30:00+02:00")).timestamp == dt.datetime(
        2026, 3, 10, 12, 30, tzinfo=UTC)


def test_event_id_wins_over_lookup_columns():
    """When event_id is given, lookup columns are ignored."""
    c = ok({**LOOKUP, **direct()})
    assert c.event_id == EID and c.lookup_key is None and c.window is None
    assert c.event_type == "order_completed"


def test_event_id_row_with_system_event_type_is_a_problem():
    """A system event type is refused even on an event_id row."""
    assert "422" in bad(direct(event_type="$autocapture")).message


# --------------------------------------------------------------------------- lookup rows


def test_lookup_row_uses_cells_and_event_time_month():
    """A lookup row takes type, key and value from cells and the event_time month as window."""
    c = ok(LOOKUP)
    assert (c.event_type, c.lookup_key, c.lookup_value) == ("order_completed", "order_id",
                                                            "ORD-1")
    assert c.window == Window(dt.datetime(2026, 3, 1, tzinfo=UTC),
                              dt.datetime(2026, 3, 31, 23, 59, 59, 999000, tzinfo=UTC))
    assert c.needs_lookup


def test_event_time_month_is_the_utc_month():
    """event_time with an offset picks the UTC calendar month."""
    c = ok({**LOOKUP, "event_time": "2026-04-01T01:00:00+02:00"})
    assert c.window.start == dt.datetime(2026, 3, 1, tzinfo=UTC)


def test_match_default_takes_the_value_from_its_column():
    """--match ATTR uses ATTR as the key and the ATTR column as the value."""
    d = SheetDefaults(event_type="order_completed", match="order_id")
    c = ok({"order_id": "00123", "event_time": "2026-03-10", "set.x": "1"}, d)
    assert (c.event_type, c.lookup_key, c.lookup_value) == ("order_completed", "order_id",
                                                            "00123")


def test_match_column_empty_is_a_problem():
    """With --match, an empty match cell is a problem naming that column."""
    d = SheetDefaults(event_type="t", match="order_id")
    assert bad({"event_time": "2026-03-10", "set.x": "1"}, d).column == "order_id"


def test_lookup_value_missing_is_a_problem():
    """lookup_key without lookup_value is a problem on lookup_value."""
    p = bad({k: v for k, v in LOOKUP.items() if k != "lookup_value"})
    assert p.column == "lookup_value"


def test_no_event_type_is_a_problem():
    """A lookup row with no event type (cell or --event-type) is a problem."""
    p = bad({k: v for k, v in LOOKUP.items() if k != "event_type"})
    assert p.column == "event_type" and "--event-type" in p.message


def test_no_lookup_is_a_problem():
    """A row with neither event_id nor lookup key is a problem."""
    p = bad({"event_type": "t", "event_time": "2026-03-10", "set.x": "1"})
    assert p.column == "lookup_key"


def test_default_event_type_applies_to_lookup_rows():
    """--event-type fills rows whose event_type cell is empty."""
    cells = {k: v for k, v in LOOKUP.items() if k != "event_type"}
    assert ok(cells, SheetDefaults(event_type="signup")).event_type == "signup"


@pytest.mark.parametrize("event_type", ["$autocapture", "$pageview", "pageview",
                                        "user_identify", "group", "lead"])
def test_system_event_types_are_problems(event_type):
    """System event types are refused: the API will not mutate them (422)."""
    p = bad({**LOOKUP, "event_type": event_type})
    assert p.column == "event_type" and "refuses to mutate system events (422)" in p.message


def test_system_event_type_from_default_is_a_problem():
    """A system --event-type makes lookup rows problems."""
    cells = {k: v for k, v in LOOKUP.items() if k != "event_type"}
    assert "--event-type" in bad(cells, SheetDefaults(event_type="lead")).message


# --------------------------------------------------------------------------- windows


def test_window_from_cells_with_bare_date_end_meaning_end_of_day():
    """from/to cells make the window, and a bare to-date means the end of that day."""
    c = ok({**LOOKUP, "from_timestamp": "2026-03-01", "to_timestamp": "2026-03-05"})
    assert c.window == Window(dt.datetime(2026, 3, 1, tzinfo=UTC),
                              dt.datetime(2026, 3, 5, 23, 59, 59, 999000, tzinfo=UTC))


def test_window_cell_wins_over_event_time():
    """from/to cells take precedence over event_time."""
    c = ok({**LOOKUP, "from_timestamp": "2026-01-01T00:00:00Z",
            "to_timestamp": "2026-01-02T00:00:00Z"})
    assert c.window.start.month == 1


def test_window_half_from_cell_half_from_default():
    """One window end may come from the cell and the other from --from/--to."""
    d = SheetDefaults(to=dt.datetime(2026, 6, 1, tzinfo=UTC))
    cells = {k: v for k, v in LOOKUP.items() if k != "event_time"}
    c = ok({**cells, "from_timestamp": "2026-03-01"}, d)
    assert c.window == Window(dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 6, 1,
                                                                               tzinfo=UTC))
    assert bad({**cells, "from_timestamp": "2026-03-01"}).column == "to_timestamp"


def test_window_from_defaults():
    """--from/--to give the window when the row says nothing."""
    d = SheetDefaults(from_=dt.datetime(2026, 3, 1), to=dt.datetime(2026, 3, 2))
    cells = {k: v for k, v in LOOKUP.items() if k != "event_time"}
    c = ok(cells, d)
    assert c.window == Window(dt.datetime(2026, 3, 1, tzinfo=UTC),
                              dt.datetime(2026, 3, 2, tzinfo=UTC))


def test_no_window_is_a_problem():
    """A lookup row with no window source is a problem saying what to give."""
    cells = {k: v for k, v in LOOKUP.items() if k != "event_time"}
    assert "from_timestamp/to_timestamp, event_time or --from/--to" in bad(cells).message


def test_window_from_after_to_is_a_problem():
    """A window whose start is after its end is a problem."""
    p = bad({**LOOKUP, "from_timestamp": "2026-03-05", "to_timestamp": "2026-03-01"})
    assert p.column == "from_timestamp" and "starts after it ends" in p.message


def test_unparseable_window_time_is_a_problem():
    """A window time that is not ISO 8601 is a problem on its column."""
    assert bad({**LOOKUP, "to_timestamp": "yesterday"}).column == "to_timestamp"
    assert bad({**LOOKUP, "event_time": "March"}).column == "event_time"


# --------------------------------------------------------------------------- attributes


def test_event_attributes_json_object_with_nested_values():
    """event_attributes is a JSON object; nested objects are allowed."""
    c = ok(direct(**{"event_attributes": '{"a": {"b": [1, 2]}, "c": "x"}'}))
    assert c.attributes == {"price": "149.90", "a": {"b": [1, 2]}, "c": "x"}


@pytest.mark.parametrize("text,why", [("[1, 2]", "not an array"), ('"x"', "not a string"),
                                      ("{bad json", "not valid JSON")])
def test_event_attributes_must_be_a_json_object(text, why):
    """Invalid JSON or JSON that is not an object is a problem."""
    p = bad({"event_id": EID, "timestamp": "2026-03-10", "event_attributes": text})
    assert p.column == "event_attributes" and why in p.message


def test_nan_in_event_attributes_is_a_problem():
    """NaN or Infinity in event_attributes is a problem (not valid JSON)."""
    p = bad({"event_id": EID, "timestamp": "2026-03-10", "event_attributes": '{"a": NaN}'})
    assert "NaN" in p.message


def test_conflicting_attribute_is_a_problem_and_equal_one_is_fine():
    """The same key in set.* and event_attributes must have the same value."""
    assert ok(direct(event_attributes='{"price": "149.90"}')).attributes == {"price": "149.90"}
    p = bad(direct(event_attributes='{"price": 149.9}'))
    assert p.column == "set.price" and "conflicts" in p.message


@pytest.mark.parametrize("cells", [{"event_id": EID, "timestamp": "2026-03-10"},
                                   {"event_id": EID, "timestamp": "2026-03-10",
                                    "event_attributes": "{}"}])
def test_nothing_to_set_is_a_problem(cells):
    """A row with no attribute to write (or an empty object) is a problem."""
    assert "nothing to set" in bad(cells).message


def test_attributes_over_10kb_are_a_problem_with_the_size():
    """Attributes over 10240 bytes of compact UTF-8 JSON are refused, with the size."""
    # {"price":"149.90","big":"..."} — pad so the total is exactly the limit, then one more.
    base = len(json.dumps({"price": "149.90", "big": ""}, separators=(",", ":")))
    fits = "x" * (MAX_ATTRIBUTES_BYTES - base)
    assert ok(direct(**{"set.big": fits}))
    p = bad(direct(**{"set.big": fits + "x"}))
    assert f"{MAX_ATTRIBUTES_BYTES + 1} bytes" in p.message


def test_attribute_size_counts_utf8_bytes():
    """The 10 KB limit counts UTF-8 bytes, not characters."""
    p = bad(direct(**{"set.big": "é" * 5200}))
    assert "bytes" in p.message


def test_formula_looking_values_pass_through():
    """Formula-looking text is just text here; the report neutralises it."""
    assert ok(direct(**{"set.link": '=HYPERLINK("http://x")'})).attributes["link"] == (
        '=HYPERLINK("http://x")')


# --------------------------------------------------------------------------- modes and keys


def test_merge_mode_from_cell_default_and_bad_value():
    """merge_mode comes from the cell (any case) or --merge-mode; other words are problems."""
    assert ok(direct(merge_mode="REPLACE")).merge_mode == "replace"
    assert ok(direct(), SheetDefaults(merge_mode="replace")).merge_mode == "replace"
    p = bad(direct(merge_mode="upsert"))
    assert p.column == "merge_mode" and "merge" in p.message


@pytest.mark.parametrize("key,good", [("order-price-fix-ORD-123", True), ("k" * 64, True),
                                      ("k" * 65, False), ("has space", False),
                                      ("clé", False)])
def test_idempotency_key_rules(key, good):
    """An explicit idempotency key is 1-64 printable ASCII characters without spaces."""
    result = check(direct(idempotency_key=key))
    if good:
        assert isinstance(result, Correction) and result.idempotency_key == key
    else:
        assert isinstance(result, RowProblem) and result.column == "idempotency_key"


def test_reader_problem_becomes_a_row_problem():
    """A row the reader could not read becomes a RowProblem with its message and column."""
    p = validate(RawRow(7, {"event_id": "x"}, "not valid UTF-8", "set.a"), D)
    assert isinstance(p, RowProblem)
    assert (p.row_number, p.column, p.message) == (7, "set.a", "not valid UTF-8")


def test_row_key_ignores_row_number_and_follows_content():
    """The row key depends on content, not position, and changes when the meaning changes."""
    a = check(direct(), row=2)
    b = check(direct(), row=900)
    assert a.row_key == b.row_key
    assert check(direct(timestamp="2026-03-10T14:30:00+00:00")).row_key == a.row_key
    assert check(direct(**{"set.price": "149.91"})).row_key != a.row_key
    assert check(direct(), SheetDefaults(merge_mode="replace")).row_key != a.row_key
    assert check(direct(), SheetDefaults(event_type="x")).row_key == a.row_key
    lookup = check(LOOKUP)
    assert check(LOOKUP, SheetDefaults(event_type="x")).row_key == lookup.row_key
    assert check({**LOOKUP, "event_time": "2026-03-20"}).row_key == lookup.row_key
    assert check({**LOOKUP, "event_time": "2026-04-20"}).row_key != lookup.row_key


def test_problem_row_key_follows_raw_cells():
    """A problem row's key comes from its cells: same cells, same key, any row number."""
    assert check({"event_id": "bad"}, row=3).row_key == check({"event_id": "bad"}, row=8).row_key
    assert check({"event_id": "bad"}).row_key != check({"event_id": "worse"}).row_key


# --------------------------------------------------------------------------- whole sheets


def test_validate_batches_checks_the_header_before_reading(tmp_path):
    """validate_batches raises SheetError at once for a bad header."""
    path = write_csv(tmp_path, [["event_id", "timestamp", "price"], [EID, "2026-03-10", "1"]])
    with pytest.raises(SheetError, match=r"set.<name>"):
        validate_batches(path, D)


def test_validate_batches_mixes_corrections_and_problems(tmp_path):
    """Every data row gives one result carrying its row number, in sheet order."""
    path = write_csv(tmp_path, [
        ["event_id", "timestamp", "set.price", "set.code"],
        [EID, "2026-03-10T14:30:00Z", "149.90", "00123"],
        ["nope", "2026-03-10", "1", ""],
        [EID, "2026-03-10", "", ""],
    ])
    out = results(path, batch_size=2)
    assert [type(r).__name__ for r in out] == ["Correction", "RowProblem", "RowProblem"]
    assert [r.row_number for r in out] == [2, 3, 4]
    assert out[0].attributes == {"price": "149.90", "code": "00123"}


def test_parquet_numbers_stay_numbers_and_lookup_values_become_text(tmp_path):
    """Parquet attribute numbers stay JSON numbers; lookup values become text without .0."""
    table = pa.table({
        "event_type": ["order", "order", "order"],
        "lookup_key": ["order_id", "order_id", "order_id"],
        "lookup_value": pa.array([123.0, 1.5, None], pa.float64()),
        "event_time": pa.array([dt.datetime(2026, 3, 10, 14, 30)] * 3, pa.timestamp("us")),
        "set.price": [149.9, 2.0, 3.0],
        "set.qty": pa.array([2, 3, 4], pa.int32()),
        "set.when": pa.array([dt.datetime(2026, 3, 1, 12)] * 3, pa.timestamp("s", tz="UTC")),
        "set.inf": [None, float("inf"), None],
    })
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    first, second, third = results(path)
    assert first.lookup_value == "123"
    assert first.attributes == {"price": 149.9, "qty": 2, "when": "2026-03-01T12:00:00Z"}
    assert first.window.start == dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert isinstance(second, RowProblem) and second.column == "set.inf"
    assert isinstance(third, RowProblem) and third.column == "lookup_value"


def test_parquet_event_attributes_struct_is_the_object(tmp_path):
    """A Parquet struct in event_attributes is the attribute object, nested values included."""
    table = pa.table({
        "event_id": [EID],
        "timestamp": pa.array([dt.datetime(2026, 3, 10)], pa.timestamp("ms")),
        "event_attributes": pa.array([{"a": 1, "b": {"c": "d"}}]),
    })
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    [c] = results(path)
    assert c.attributes == {"a": 1, "b": {"c": "d"}}


# --------------------------------------------------------------------------- properties

_COLUMN_NAMES = st.one_of(
    st.sampled_from([*KNOWN_COLUMNS, "set.a", "set.b", "order_id"]),
    st.text(max_size=6),
)
_CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", EID, EID.upper(), "2026-03-10", "2026-03-10T14:30:00+02:00",
                     "order_completed", "$autocapture", "merge", "replace", '{"a": 1}',
                     "[1]", "{", "00123", "149.90", '=HYPERLINK("x")', " "]),
)


@st.composite
def _sheets(draw):
    header = draw(st.lists(_COLUMN_NAMES, min_size=1, max_size=7))
    if not any(h.strip() for h in header):
        header.append("event_id")
    width = len(header)
    rows = draw(st.lists(st.lists(_CELLS, min_size=width, max_size=width), max_size=8))
    return header, rows


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sheet=_sheets(), match=st.sampled_from([None, "order_id"]),
       event_type=st.sampled_from([None, "order_completed"]))
def test_property_every_csv_row_gives_exactly_one_result(tmp_path, sheet, match, event_type):
    """Any CSV of text cells gives one result per non-blank data row, or a SheetError."""
    header, rows = sheet
    path = write_csv(tmp_path, [header, *rows], name="prop.csv")
    defaults = SheetDefaults(match=match, event_type=event_type)
    try:
        out = results(path, defaults, batch_size=3)
    except SheetError:
        return
    expected = [i + 2 for i, row in enumerate(rows) if any(row)]
    assert [r.row_number for r in out] == expected
    assert all(isinstance(r, Correction | RowProblem) for r in out)


_ROW = st.fixed_dictionaries({
    "event_id": st.sampled_from([EID, "b" * 8 + EID[8:], "not-a-uuid"]),
    "timestamp": st.sampled_from(["2026-03-10", "2026-03-11T00:00:00Z", "x"]),
    "set.a": st.text(max_size=5),
    "set.b": st.sampled_from(["", "1", "2"]),
})


@settings(max_examples=75, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=1, max_size=8).flatmap(
    lambda rows: st.tuples(st.just(rows), st.permutations(rows))))
def test_property_row_keys_depend_only_on_content(tmp_path, rows):
    """Shuffling rows gives the same set of keys, and each row's key ignores its position."""
    original, shuffled = rows
    header = list(_ROW_KEYS)
    keys = []
    for name, order in (("a.csv", original), ("b.csv", shuffled)):
        path = write_csv(tmp_path, [header] + [[r[h] for h in header] for r in order], name)
        keys.append(sorted(r.row_key for r in results(path)))
    assert keys[0] == keys[1]
    for row in original:
        cells = {k: v for k, v in row.items() if v}
        assert check(cells, row=2).row_key == check(cells, row=1234).row_key


_ROW_KEYS = ("event_id", "timestamp", "set.a", "set.b")
