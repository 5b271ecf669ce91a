"""distill: turn a reasoning teacher into small students."""

__version__ = "0.1.0"
