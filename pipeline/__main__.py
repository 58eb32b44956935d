"""`python -m pipeline` and the `corrections` script: stop signals are noted from the start."""

from pipeline.signals import note_early


def main() -> None:
    note_early()  # before the heavy imports: a signal in the first second stops cleanly
    from pipeline.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
