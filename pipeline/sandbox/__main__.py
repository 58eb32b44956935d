"""`python -m pipeline.sandbox`: the sandbox command without the main CLI."""

from pipeline.sandbox.command import sandbox_command

sandbox_command(prog_name="python -m pipeline.sandbox")
