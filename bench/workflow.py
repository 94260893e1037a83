"""Where a workflow run's time goes: every job's wall and CPU time from Snakemake's benchmark files.

    python bench/workflow.py [--benchmarks logs/benchmarks] [--metadata .snakemake/metadata] [--top 10]
                             [--save run.csv] [--compare before.csv] [--markdown docs/run_times.md]

Every rule writes a benchmark file ``logs/benchmarks/<path>.tsv`` beside its log
``logs/<path>.log`` (Snakemake's ``benchmark:`` directive: ``s`` the job's wall time [s],
``cpu_time`` its processes' CPU time [s], ``max_rss`` [MB]). ``cpu_time`` is a lower bound:
Snakemake samples a job's processes every 0.5 s for 15 s, then every 30 s, and keeps the last
sample, so the CPU of a job's last stretch (up to 30 s per thread) is missing (for the default
run, docs/run_times.md gives both); the wall times are exact. Snakemake's metadata records (one JSON per output: the rule, the log,
start and end times [s since the epoch]) name each job's rule and give the run's span from its
first job's start to its last job's end (of every run whose outputs are still there: measure a
fresh clone). This prints the most expensive jobs by wall time, the totals per rule and over
the run (the CPU time a 2-core laptop has to supply), and with ``--compare`` the same jobs and
rules beside an earlier ``--save``d run, for the before/after tables of a speed-up.
``--markdown FILE`` writes the run's time per study and rule as Markdown into FILE, between the
markers ``<!-- bench/workflow.py: begin -->`` and ``<!-- bench/workflow.py: end -->`` where FILE
has them (the text around them stays), else as the whole file: ``docs/run_times.md``, the one
place that carries measured run times. Reads text files only: it imports neither torch nor
Lightning.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from pipeline.studies import STUDIES

COLUMNS = ("job", "rule", "wall_s", "cpu_s", "max_rss_mb")
BEGIN, END = "<!-- bench/workflow.py: begin -->", "<!-- bench/workflow.py: end -->"


def read_metadata(directory: Path) -> tuple[dict[str, str], tuple[float, float] | None]:
    """Snakemake's metadata records under ``directory`` -> (job -> rule, where job is the log's
    path under logs/ without .log; (first start, last end) [s since the epoch] or None)."""
    rules, starts, ends = {}, [], []
    if not directory.is_dir():
        return rules, None
    for path in directory.iterdir():
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # a record being written, or another Snakemake's file
        for log in record.get("log") or []:
            if log.startswith("logs/") and log.endswith(".log"):
                rules[log[len("logs/"):-len(".log")]] = record.get("rule", "?")
        if record.get("starttime") and record.get("endtime"):
            starts.append(record["starttime"])
            ends.append(record["endtime"])
    return rules, ((min(starts), max(ends)) if starts else None)


def read_benchmarks(directory: Path, rules: dict[str, str] | None = None) -> list[dict]:
    """One row per benchmark file under ``directory``: job (its path without .tsv), rule (from
    ``rules``, job -> rule, else the first folder), wall_s, cpu_s, max_rss_mb (the last line's,
    for a job benchmarked repeatedly)."""
    rules = rules or {}
    rows = []
    for path in sorted(directory.rglob("*.tsv")):
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle, delimiter="\t"))
        if not records:
            raise SystemExit(f"{path}: no benchmark line under the header; expected Snakemake's benchmark format")
        try:
            last = records[-1]
            wall, cpu, rss = float(last["s"]), float(last["cpu_time"]), float(last["max_rss"])
        except (KeyError, ValueError) as error:
            raise SystemExit(f"{path}: {error!r}; expected the columns s, cpu_time and max_rss with numbers") from None
        job = path.relative_to(directory).with_suffix("").as_posix()
        rows.append({"job": job, "rule": rules.get(job, job.split("/")[0]), "wall_s": wall, "cpu_s": cpu, "max_rss_mb": rss})
    if not rows:
        raise SystemExit(f"{directory}: no benchmark files (*.tsv); run the workflow first")
    return rows


def per_rule(rows: list[dict]) -> dict[str, dict]:
    """rule -> jobs, wall_s and cpu_s summed over its jobs."""
    totals: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
    for row in rows:
        total = totals[row["rule"]]
        total["jobs"] += 1
        total["wall_s"] += row["wall_s"]
        total["cpu_s"] += row["cpu_s"]
    return dict(totals)


def study_of(row: dict) -> str:
    """The study a job belongs to: the first folder of its benchmark path or its rule, where that
    names a study (``vertexing/train_rnn``, ``build_jet_images``), else ``simulation`` (generation,
    the detector models, the track splits, the validation plots)."""
    first = row["job"].split("/")[0]
    if first in STUDIES:
        return first
    return next((study for study in STUDIES if study in row["rule"] or study in first), "simulation")


def markdown(rows: list[dict], span: tuple[float, float] | None = None) -> str:
    """The run's time per study and rule as a Markdown table, with the run's totals."""
    studies: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        studies[study_of(row)][row["rule"]].append(row)
    order = ["simulation", *STUDIES]
    lines = []
    if span:
        start = datetime.fromtimestamp(span[0], tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"The run that started {start}: {(span[1] - span[0]) / 60:.1f} min from its first job's start "
                     "to its last job's end.")
    wall, cpu = sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows)
    lines += [f"{len(rows)} jobs: {wall / 60:.1f} min of job wall time, {cpu / 60:.1f} CPU minutes in the benchmark "
              f"files (a lower bound; on 2 cores at least {cpu / 120:.1f} min of wall time).", "",
              "| study | rule | jobs | wall [min] | CPU [min] | max RSS [MB] |", "|---|---|---:|---:|---:|---:|"]
    for study in sorted(studies, key=lambda name: order.index(name) if name in order else len(order)):
        by_rule = studies[study]
        for rule, jobs in sorted(by_rule.items(), key=lambda item: -sum(r["cpu_s"] for r in item[1])):
            lines.append(f"| {study} | {rule} | {len(jobs)} | {_minutes(sum(r['wall_s'] for r in jobs))} | "
                         f"{_minutes(sum(r['cpu_s'] for r in jobs))} | {max(r['max_rss_mb'] for r in jobs):.0f} |")
        every = [r for jobs in by_rule.values() for r in jobs]
        lines.append(f"| **{study}** | all | {len(every)} | {_minutes(sum(r['wall_s'] for r in every))} | "
                     f"{_minutes(sum(r['cpu_s'] for r in every))} | {max(r['max_rss_mb'] for r in every):.0f} |")
    return "\n".join(lines)


def write_markdown(path: Path, table: str) -> None:
    """``table`` between the markers of ``path`` (the text around them kept), or as the whole file."""
    block = f"{BEGIN}\n{table}\n{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        before, rest = text.split(BEGIN, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = f"# Run times\n\nWritten by `python bench/workflow.py --markdown {path}`.\n\n{block}\n"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def load_saved(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or set(COLUMNS) - set(rows[0]):
        raise SystemExit(f"{path}: expected a CSV saved by --save with the columns {', '.join(COLUMNS)}")
    return {row["job"]: {**row, "wall_s": float(row["wall_s"]), "cpu_s": float(row["cpu_s"])} for row in rows}


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f}"


def report(rows: list[dict], top: int, before: dict[str, dict] | None = None,
           span: tuple[float, float] | None = None) -> str:
    """The Markdown tables (module docstring)."""
    lines = []
    head = "| job | wall [min] | CPU [min] |" + (" wall before [min] | CPU before [min] |" if before else "")
    rule = "|---|---:|---:|" + ("---:|---:|" if before else "")
    lines += [f"The {top} most expensive jobs by wall time:", "", head, rule]
    for row in sorted(rows, key=lambda r: -r["wall_s"])[:top]:
        line = f"| {row['job']} | {_minutes(row['wall_s'])} | {_minutes(row['cpu_s'])} |"
        if before:
            old = before.get(row["job"])
            line += f" {_minutes(old and old['wall_s'])} | {_minutes(old and old['cpu_s'])} |"
        lines.append(line)
    lines += ["", "Per rule:", "", "| rule | jobs | wall [min] | CPU [min] |" + (" CPU before [min] |" if before else ""),
              "|---|---:|---:|---:|" + ("---:|" if before else "")]
    old_rules = per_rule(list(before.values())) if before else {}
    for name, total in sorted(per_rule(rows).items(), key=lambda item: -item[1]["cpu_s"]):
        line = f"| {name} | {total['jobs']} | {_minutes(total['wall_s'])} | {_minutes(total['cpu_s'])} |"
        if before:
            line += f" {_minutes(old_rules.get(name, {}).get('cpu_s'))} |"
        lines.append(line)
    wall, cpu = sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows)
    lines += ["", f"{len(rows)} jobs: {wall / 60:.1f} min of job wall time, {cpu / 60:.1f} CPU minutes "
              f"(on 2 cores at least {cpu / 120:.1f} min of wall time)"]
    if span:
        lines.append(f"the run: {(span[1] - span[0]) / 60:.1f} min from its first job's start to its last job's end")
    if before:
        old_cpu = sum(r["cpu_s"] for r in before.values())
        lines.append(f"before: {len(before)} jobs, {old_cpu / 60:.1f} CPU minutes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=Path, default=Path("logs/benchmarks"))
    parser.add_argument("--metadata", type=Path, default=Path(".snakemake/metadata"))
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--save", type=Path, help="write every job's row to this CSV")
    parser.add_argument("--compare", type=Path, help="a CSV written by --save of an earlier run")
    parser.add_argument("--markdown", type=Path,
                        help="write the time per study and rule as Markdown into this file (docs/run_times.md), "
                             "between its bench/workflow.py markers where it has them")
    args = parser.parse_args(argv)
    rules, span = read_metadata(args.metadata)
    rows = read_benchmarks(args.benchmarks, rules)
    before = load_saved(args.compare) if args.compare else None
    print(report(rows, args.top, before, span))
    if args.save:
        temporary = args.save.with_name(args.save.name + ".tmp")
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        temporary.replace(args.save)
        print(f"saved {len(rows)} jobs to {args.save}", file=sys.stderr)
    if args.markdown:
        write_markdown(args.markdown, markdown(rows, span))
        print(f"wrote the run-time table to {args.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
