"""Every figure of issue 6, one script after another, then one table: figure, target, measured, verdict.

Each script runs in a process of its own with `--json` (its progress shows on stderr as it goes); the
combined report is printed at the end (`--json` for all of it) and, with `--out`, written to a file.

    .venv/bin/python bench/all.py [--quick] [--out bench-results.json]

`--quick` runs smaller sizes (a smoke test of the scripts, not figures to quote).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import bench`

import argparse
import json
import subprocess
import time
from typing import Any

from bench.common import DEFAULT_ADMIN_DSN, machine_line, say

HERE = Path(__file__).resolve().parent

#: (script, arguments for the figures, arguments for --quick)
SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    ("throughput.py", ["--jobs", "20000"], ["--jobs", "2000", "--latency-samples", "50"]),
    ("latency.py", ["--samples", "500"], ["--samples", "50"]),
    (
        "slack_ack.py",
        [],
        ["--backlog", "2000", "--clicks", "20", "--commands", "20", "--resume-samples", "5"],
    ),
    ("history.py", ["--explain"], ["--open", "1000", "--finished", "20000", "--repeat", "5"]),
    ("memory.py", [], ["--open", "5000", "--decisions", "50", "--settle", "1"]),
]

#: How each target reads in the table: (report key, what, unit).
LABELS = {
    "postgres_vs_procrastinate": ("1 work-down, PostgreSQL vs Procrastinate", "x"),
    "sqlite_completed_per_s": ("1 work-down, SQLite", "jobs/s"),
    "in_process_p50_ms": ("2 enqueue->start p50, in process (PG)", "ms"),
    "in_process_p99_ms": ("2 enqueue->start p99, in process (PG)", "ms"),
    "across_replicas_p99_ms": ("2 enqueue->start p99, across replicas (PG)", "ms"),
    "postgres_ack_p99_ms": ("3 Slack ack p99, burst during a drain (PG)", "ms"),
    "sqlite_ack_p99_ms": ("3 Slack ack p99, burst during a drain (SQLite)", "ms"),
    "postgres_click_to_resume_p50_ms": ("4 click->resume p50 (PG)", "ms"),
    "sqlite_click_to_resume_p50_ms": ("4 click->resume p50 (SQLite)", "ms"),
    "postgres_tick_ratio": ("5 scheduler tick, with/without 1M history (PG)", "x"),
    "postgres_stats_ratio": ("5 /queue stats, with/without 1M history (PG)", "x"),
    "sqlite_tick_ratio": ("5 scheduler tick, with/without 1M history (SQLite)", "x"),
    "sqlite_stats_ratio": ("5 /queue stats, with/without 1M history (SQLite)", "x"),
    "postgres_peak_rss_mb": ("6 bot peak RSS, 100k open jobs (PG)", "MB"),
    "sqlite_peak_rss_mb": ("6 bot peak RSS, 100k open jobs (SQLite)", "MB"),
}


def run_script(script: str, arguments: list[str], admin_dsn: str) -> dict[str, Any]:
    command = [sys.executable, str(HERE / script), "--json", "--admin-dsn", admin_dsn, *arguments]
    say(f"== {script} {' '.join(arguments)}")
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"{script} failed with exit code {finished.returncode}")
    report: dict[str, Any] = json.loads(finished.stdout)
    report["command"] = f".venv/bin/python bench/{script} {' '.join(arguments)}".strip()
    return report


def render(reports: dict[str, dict[str, Any]], *, quick: bool) -> str:
    header = f"{'figure':<52}{'target':>17}{'measured':>15}  verdict"
    title = "Issue 6 figures" + (
        " (--quick: small sizes, checks the scripts; not figures to quote)" if quick else ""
    )
    lines = [title, header, "-" * len(header)]
    for report in reports.values():
        for key, target in report.get("targets", {}).items():
            label, unit = LABELS.get(key, (key, ""))
            bound = "<=" if unit in ("ms", "MB") or key.endswith("_ratio") else ">="
            wanted = f"{bound} {target['target']:,.4g} {unit}"
            measured = f"{target['measured']:,.4g} {unit}"
            verdict = "meets" if target["met"] else "MISSES"
            lines.append(f"{label:<52}{wanted:>17}{measured:>15}  {verdict}")
    lines.append("")
    for script, report in reports.items():
        lines.append(f"{script}: {report['command']}; {machine_line(report)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every benchmark of issue 6 and tabulate the figures")
    parser.add_argument("--quick", action="store_true", help="small sizes: check the scripts run")
    parser.add_argument("--json", action="store_true", help="print every report as one JSON object")
    parser.add_argument("--out", help="also write that JSON object to this file")
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN, help="DSN allowed to CREATE DATABASE")
    parser.add_argument("--only", help="comma-separated scripts to run (e.g. latency.py,history.py)")
    args = parser.parse_args()
    start = time.perf_counter()
    reports = {}
    for script, full, quick in SCRIPTS:
        if args.only and script not in args.only.split(","):
            continue
        reports[script] = run_script(script, quick if args.quick else full, args.admin_dsn)
    say(f"all figures in {time.perf_counter() - start:.0f}s")
    combined = {"quick": args.quick, "reports": reports}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(combined, indent=2))
    print(json.dumps(combined, indent=2) if args.json else render(reports, quick=args.quick))


if __name__ == "__main__":
    main()
