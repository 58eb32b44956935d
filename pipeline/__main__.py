"""`python -m pipeline` and the `corrections` script: stop signals are noted from the start.

Start-up and exit are a large share of a short run (a 300-row sheet takes ~2 s of requests),
so the command line keeps both lean: the garbage collector stays off while the modules load
(nothing they build is garbage), and what they built is then frozen, so neither the run's
collections nor the interpreter's final one walk those objects again (~0.1 s at exit).
"""

import gc
import sys
import types

from pipeline.signals import note_early


def _defer_httpx_cli() -> None:
    """Load httpx without its own command line.

    `import httpx` imports `httpx._main` (its `httpx` command: rich, pygments; ~35 ms) only
    to offer `httpx.main`, which this process never calls. A stand-in takes its place that
    loads the real one on first call, so `httpx.main` still works.
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stand_in = types.ModuleType("httpx._main", "Loads httpx's command line on first use.")

    def main(*args: object, **kwargs: object) -> object:
        if sys.modules.get("httpx._main") is stand_in:
            del sys.modules["httpx._main"]
        from httpx._main import main as real

        return real(*args, **kwargs)

    stand_in.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stand_in


def main() -> None:
    note_early()  # before the heavy imports: a signal in the first second stops cleanly
    gc.disable()
    try:
        _defer_httpx_cli()
        from pipeline.cli import main as cli
    finally:
        gc.freeze()
        gc.enable()
    cli()


if __name__ == "__main__":
    main()
