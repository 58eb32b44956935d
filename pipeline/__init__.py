"""corrections: fix analytics events after ingestion, exactly once, with an audit trail.

The command line (`corrections`, `python -m pipeline`) is a thin layer over this package. The
library API (`pipeline.api`, re-exported here) runs the same jobs from a script or a notebook:

    import pipeline
    result = pipeline.apply("fixes.csv", token="API_KEY.SERVER_TOKEN")
    result.report()   # a pandas DataFrame

`pipeline.validate`, `.plan`, `.apply`, `.verify`, `.report` are these functions; the modules of
the same names are imported with `from pipeline.validate import ...`.
"""

from __future__ import annotations

import logging

from pipeline.signals import note_early_for_cli

# the command line stops cleanly on a signal from its first instant, before the imports below
note_early_for_cli()

__version__ = "0.1.0"

# A library prints nothing unless its user attaches a handler (no logging "last resort").
logging.getLogger("corrections").addHandler(logging.NullHandler())

from pipeline.api import (  # noqa: E402  (after __version__: the CLI imports it from here)
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
from pipeline.errors import CorrectionsError  # noqa: E402
from pipeline.readers.dialect import Dialect  # noqa: E402

__all__ = ["Corrections", "CorrectionsError", "Dialect", "RunOptions", "RunSummary", "Sheet",
           "ValidationSummary", "VerifySummary", "__version__", "apply", "apply_async", "plan",
           "plan_async", "report", "validate", "verify"]
