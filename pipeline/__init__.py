"""corrections: fix analytics events after ingestion, exactly once, with an audit trail.

The command line (`corrections`, `python -m pipeline`) is a thin layer over this package; every
piece can be imported and called from a notebook.
"""

__version__ = "0.1.0"
