"""corrections: fix analytics events after ingestion, exactly once, with an audit trail.

The command line (`corrections`, `python -m pipeline`) is a thin layer over this package. The
library API (`pipeline.api`, re-exported here) runs the same jobs from a script or a notebook:

    import pipeline
    result = pipeline.apply("fixes.csv", token="API_KEY.SERVER_TOKEN")
    result.report()   # a pandas DataFrame

`pipeline.validate`, `.plan`, `.apply`, `.verify`, `.report` are these functions; the modules of
the same names are imported with `from pipeline.validate import ...`.

The API is loaded on first use: `python -m pipeline` imports this file before it can note stop
signals, so it must stay light.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import TYPE_CHECKING, Any

from pipeline.signals import note_early_for_cli

# the command line stops cleanly on a signal from its first instant, before the imports below
note_early_for_cli()

__version__ = "0.1.0"

_API = ("Corrections", "RunOptions", "RunSummary", "Sheet", "ValidationSummary",
        "VerifySummary", "apply", "apply_async", "plan", "plan_async", "report", "validate",
        "verify")
__all__ = ["Corrections", "CorrectionsError", "Dialect", "RunOptions", "RunSummary", "Sheet",
           "ValidationSummary", "VerifySummary", "__version__", "apply", "apply_async", "plan",
           "plan_async", "report", "validate", "verify"]

if TYPE_CHECKING:
    from pipeline.api import (
        Corrections,
        RunOptions,
        RunSummary,
        Sheet,
        ValidationSummary,
        VerifySummary,
        apply,
        apply_async,
        plan,
        plan_async,
        report,
        validate,
        verify,
    )
    from pipeline.errors import CorrectionsError
    from pipeline.readers.dialect import Dialect

# A library prints nothing unless its user attaches a handler (no logging "last resort").
logging.getLogger("corrections").addHandler(logging.NullHandler())


class _Package(types.ModuleType):
    """Keeps `pipeline.validate` (and `.report`, `.verify`) the API functions even when the
    modules of the same names are imported later (importing a submodule sets the attribute)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return  # the module stays reachable through sys.modules and `from ... import`
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _API:
        from pipeline import api

        for public in _API:
            globals()[public] = getattr(api, public)
        return globals()[name]
    if name == "CorrectionsError":
        from pipeline.errors import CorrectionsError

        return CorrectionsError
    if name == "Dialect":
        from pipeline.readers.dialect import Dialect

        return Dialect
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
