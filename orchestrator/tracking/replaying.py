"""Replaying a spool file: ``python -m orchestrator.tracking replay SPOOL [--uri URI]`` delivers it later.

Every op is delivered idempotently (:mod:`.deliver`) and the progress is recorded beside the
spool (:mod:`.spool`), so a replay can be run again after a partial one, or after its progress
file was lost, without duplicating a run or a metric step.

(Not ``replay.py``: the package exports the function :func:`replay`, which a submodule of the
same name would shadow on the package once imported.)
"""

from __future__ import annotations

import argparse
import logging
import sys

from orchestrator.tracking.client import _client, _is_transient, _short
from orchestrator.tracking.deliver import _Deliverer
from orchestrator.tracking.spool import read_progress, read_spool, record_progress

logger = logging.getLogger(__name__)


def replay(path: str, uri: str | None = None, timeout_s: float = 30.0) -> tuple[int, int]:
    """Deliver a spool file's ops in order; return (delivered now, still undelivered).

    Progress is kept beside it in ``SPOOL.done`` (delivered seqs and created runs), and every op
    is delivered idempotently (a run is looked up by its handle tag before it is created, metrics
    already in the run's history are left out), so running it again after a partial delivery
    duplicates nothing. Stops at the first transient failure.
    """
    header, ops = read_spool(path)
    done_path = path + ".done"
    done, created = read_progress(done_path)
    resolved = {**(header.get("resolved") or {}), **created}
    deliverer = _Deliverer(_client(uri or header["uri"], timeout_s), header["experiment_id"], resolved)
    delivered = 0
    todo = [op for op in ops if op.seq not in done]
    with open(done_path, "a") as out:
        for i, op in enumerate(todo):
            op.uncertain = True  # a previous replay may have applied it without recording so
            try:
                deliverer.deliver(op)
            except Exception as exc:  # noqa: BLE001 - classified below
                if _is_transient(exc):
                    logger.warning("MLflow at %s unreachable (%s)", uri or header["uri"], _short(exc))
                    return delivered, len(todo) - i
                logger.warning("MLflow refused %s on run %s (%s); skipped", op.kind, op.run, _short(exc))
            record_progress(out, op, resolved.get(op.run) if op.kind == "create" else None)
            delivered += 1
    return delivered, 0


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0 when the record is complete, 1 when ops are left, 2 on a bad spool file."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="deliver a spool file written while the tracking store was down")
    rp.add_argument("spool")
    rp.add_argument("--uri", default=None, help="tracking URI (default: the one in the spool file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        delivered, left = replay(args.spool, args.uri)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {args.spool}: {exc}", file=sys.stderr)
        return 2
    if left:
        print(f"delivered {delivered} operations; {left} left: run this again when the store is reachable")
        return 1
    print(f"delivered {delivered} operations from {args.spool}; the record is complete")
    return 0
