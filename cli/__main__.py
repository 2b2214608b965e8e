"""`python -m cli`: the same as the `taskhub` command."""

from cli.main import app

app(prog_name="taskhub")
