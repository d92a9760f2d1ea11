"""What every mpicnn command line shares: a parser whose errors are ``UserError``s
and the argument types of positive and non-negative numbers.

A ``UserError`` is printed as one line ``mpicnn: error: ...`` with exit status 2 by
each command's ``main``; raising it instead of letting argparse exit keeps MPI ranks
in step (they all raise, none prints usage on its own). Imports nothing of mpicnn but
its errors, so the data package can use it without pulling in the layers.
"""
import argparse
import sys

from .errors import UserError


def run_command(run, argv=None):
    """The exit status of a one-process command ``run(argv)``: what it returns (None:
    0), or 2 after one line ``mpicnn: error: ...`` on stderr for a UserError or OSError,
    or 130 on Ctrl-C."""
    try:
        return run(argv) or 0
    except (UserError, OSError) as e:
        print(f"mpicnn: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def positive(kind):
    """Argument type: ``kind(text)`` (int or float) that must be > 0."""
    return _bounded(kind, lambda v: v > 0, "must be > 0", "positive")


def nonnegative(kind):
    """Argument type: ``kind(text)`` (int or float) that must be >= 0."""
    return _bounded(kind, lambda v: v >= 0, "must be >= 0", "non-negative")


NOUNS = {int: "a whole number", float: "a number"}  # what a value of each kind reads as to a user


def _bounded(kind, ok, rule, adjective):
    def check(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {NOUNS[kind]}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
        return value
    check.__name__ = f"{adjective} {kind.__name__}"    # argparse names the type in its errors
    return check
