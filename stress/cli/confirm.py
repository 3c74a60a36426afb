"""The question asked before deleting provisioned devices or accounts."""

from __future__ import annotations

import argparse
import sys

from stress.errors import ScenarioError


def confirmed(args: argparse.Namespace, what: str) -> bool:
    """Whether to delete ``what``: never on --dry-run, at once on --yes, else when the user says so."""
    if args.dry_run:
        print("dry run: nothing deleted")
        return False
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ScenarioError("not deleting without confirmation: pass --yes (or --dry-run to look first)")
    answer = input(f"delete these {what}? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing deleted")
    return False
