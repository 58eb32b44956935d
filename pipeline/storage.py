"""Sheets and reports on object storage (`s3://bucket/key`), through pyarrow's filesystems.

A remote sheet is streamed to a local temporary copy first (disk, not memory), so reading
stays batched and row numbers stay exact; a remote report is written locally, completely,
then uploaded, so a half-written report never appears in the bucket. Credentials and the
endpoint come from the usual AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ...).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from pipeline.errors import SheetError, UsageError
from pipeline.redact import url_credentials, url_for_display

REMOTE_SCHEMES = ("s3://",)
_CHUNK = 1 << 20


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(REMOTE_SCHEMES)


def remote_name(url: str) -> str:
    return PurePosixPath(url.split("://", 1)[1]).name


def sibling(url: str, name: str) -> str:
    """`s3://b/dir/sheet.csv`, `x.csv` → `s3://b/dir/x.csv`."""
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def _filesystem(url: str):
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(url)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot open {_shown(url, exc)}") from None


@contextmanager
def local_copy(url: str) -> Iterator[Path]:
    """A temporary local copy of a remote sheet, removed afterwards."""
    filesystem, path = _filesystem(url)
    with tempfile.TemporaryDirectory(prefix="corrections-sheet-") as tmp:
        local = Path(tmp) / remote_name(url)
        try:
            with filesystem.open_input_stream(path) as src, open(local, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
        except OSError as exc:
            raise SheetError(f"cannot read the sheet {_shown(url, exc)}") from None
        yield local


def upload(local: Path, url: str) -> None:
    filesystem, path = _filesystem(url)
    try:
        with open(local, "rb") as src, filesystem.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    except OSError as exc:
        raise UsageError(f"cannot write {_shown(url, exc)}") from None


def _shown(url: str, exc: BaseException) -> str:
    """`url: error` for a message, without the credentials a URL may carry (in either)."""
    return url_credentials(url).text(f"{url_for_display(url)}: {exc}")
