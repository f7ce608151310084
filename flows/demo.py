"""`python -m flows.demo` (what `make demo` runs): the whole chain on the embedded studio.

Prefect runs in its ephemeral mode (no server to start). A second run reuses every stage.
Extra arguments are overrides: `python -m flows.demo label.mode=known train3d.epochs=4`.
`--quiet` (`make demo QUIET=1`): no progress bars and only Prefect's warnings, then the
summary. Progress bars are drawn only on a terminal: output captured to a file gets the
stages' log lines (every ~10 % of long work) instead of escape codes.
Ends with the stage table, one total time, the metrics table and the report's path.
"""
from __future__ import annotations

import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = "--quiet" in argv
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if quiet:  # before Prefect is imported: its logging reads the setting once
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from flows.epipolarpose import epipolarpose, format_metrics, format_stages

    progress = not quiet and sys.stderr.isatty()
    t0 = time.perf_counter()  # the one total printed: what the user waited, Prefect's start-up included
    state = epipolarpose(preset="cpu", overrides=[a for a in argv if "=" in a] or None, progress=progress,
                         return_state=True)
    if state.is_failed():
        print(f"demo: {state.message}", file=sys.stderr)
        return 2
    summary = state.result()
    print()
    print(format_stages(summary))
    print(f"\nwhole chain: {time.perf_counter() - t0:.1f} s (wall clock; the stages above are part of it)")
    if summary.get("metrics"):
        print("\nTest split, the studio's held-out subjects:\n")
        print(format_metrics(summary["metrics"]))
    print(f"\nreport: {summary.get('report')}")
    return 0


if __name__ == "__main__":  # the guard Dask's LocalCluster needs (worker processes re-import __main__)
    sys.exit(main())
