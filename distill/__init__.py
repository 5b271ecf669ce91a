"""distill: turn a reasoning teacher into small students."""

__version__ = "0.1.0"

COMMAND: str | None = None  # the command line that runs the stages: set by the CLI, shown by data cards
