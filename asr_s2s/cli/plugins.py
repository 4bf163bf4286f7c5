"""``asr-s2s plugins``: every registered component with its plugin and distribution."""

from __future__ import annotations

import argparse
import json

from asr_s2s.cli.options import EXIT_OK, registry_from
# -- subcommands ----------------------------------------------------------------


def cmd_plugins(args) -> int:
    registry = registry_from(args)
    rows = [(c.kind, c.name, c.plugin, c.distribution) for c in registry.components()]
    if args.json:
        print(json.dumps([dict(zip(("kind", "name", "plugin", "distribution"), r)) for r in rows], indent=2))
        return EXIT_OK
    widths = [max(len(r[i]) for r in rows + [("kind", "name", "plugin", "distribution")]) for i in range(4)]
    for row in [("kind", "name", "plugin", "distribution"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the plugins command."""
    p = sub.add_parser("plugins", parents=[common], help="list every registered component",
                       description="List every encoder, decoder and scorer with its plugin and distribution.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_plugins)
