"""What a campaign database says: its status (totals, outcomes by fault kind and policy)
and a report (a markdown table per sweep and plots of the outcome shares)."""
from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from emu.campaign.db import CampaignDb
from emu.campaign.outcome import OUTCOMES

COLORS = {"benign": "#55A868", "late": "#8C8C8C", "detected": "#4C72B0", "crash": "#C44E52",
          "hang": "#DD8452", "deadlock": "#937860", "sdc": "#8172B3", "not_fired": "#CCB974",
          "emulator_error": "#000000"}


def status(db: CampaignDb) -> dict[str, Any]:
    """Totals and outcomes: overall, by fault kind, by policy, by sweep."""
    rows = list(db.rows())
    done = [r for r in rows if r["outcome"] is not None]
    by: dict[str, dict[str, Counter[str]]] = {"kind": defaultdict(Counter),
                                              "policy": defaultdict(Counter),
                                              "sweep": defaultdict(Counter)}
    for r in done:
        for axis in by:
            by[axis][r[axis]][r["outcome"]] += 1
    fast = sum(1 for r in done if r["fast_forward"])
    return {
        "campaign": db.meta("name"), "file": db.meta("file"), "runs": int(db.meta("runs") or 0),
        "total": len(rows), "done": len(done), "left": len(rows) - len(done),
        "fast_forwarded": fast,
        "experiment_seconds": round(sum(r["seconds"] or 0 for r in done), 3),
        "outcomes": dict(sorted(Counter(r["outcome"] for r in done).items())),
        **{f"by_{axis}": {name: dict(sorted(c.items())) for name, c in sorted(table.items())}
           for axis, table in by.items()},
        "golden": [{"program": p, "policy": q, "exit": g.exit_code, "cycles": g.cycles,
                    "instructions": g.instructions} for p, q, g in db.goldens()],
    }


def status_text(doc: dict[str, Any]) -> str:
    """The status as rich tables rendered to text."""
    from rich.console import Console
    from rich.table import Table

    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=False, color_system=None)
    console.print(f"campaign {doc['campaign']} ({doc['file']}): {doc['done']} of {doc['total']} "
                  f"experiments done, {doc['left']} left; started {doc['runs']} time(s); "
                  f"{doc['fast_forwarded']} fast-forwarded")
    for axis in ("kind", "policy"):
        table = Table(title=f"outcomes by {axis}", title_justify="left")
        table.add_column(axis)
        present = [o for o in OUTCOMES if any(o in c for c in doc[f"by_{axis}"].values())]
        for outcome in present:
            table.add_column(outcome, justify="right")
        table.add_column("total", justify="right")
        for name, counts in doc[f"by_{axis}"].items():
            table.add_row(name, *(str(counts.get(o, 0)) for o in present),
                          str(sum(counts.values())))
        console.print(table)
    return out.getvalue()


def write_report(db: CampaignDb, out_dir: str) -> Path:
    """REPORT.md and outcome plots in `out_dir`; the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = status(db)
    rows = [r for r in db.rows() if r["outcome"] is not None]
    lines = [f"# Campaign {doc['campaign']}", "",
             f"`{doc['file']}`: {doc['done']} of {doc['total']} experiments done "
             f"({doc['fast_forwarded']} fast-forwarded), {doc['experiment_seconds']:.1f} s of "
             "experiment time.", "", "## Golden runs", "",
             "| program | policy | exit | cycles | instructions |", "|---|---|---|---|---|"]
    lines += [f"| {g['program']} | {g['policy']} | {g['exit']} | {g['cycles']:,} | "
              f"{g['instructions']:,} |" for g in doc["golden"]]
    groups: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for r in rows:
        groups[(r["sweep"], r["program"], r["policy"])][r["outcome"]] += 1
    present = [o for o in OUTCOMES if any(o in c for c in groups.values())]
    lines += ["", "## Outcomes", "",
              "| sweep | program | policy | " + " | ".join(present) + " | total |",
              "|---|---|---|" + "---|" * (len(present) + 1)]
    for (sweep, program, policy), counts in sorted(groups.items()):
        total = sum(counts.values())
        cells = [f"{counts.get(o, 0)} ({100 * counts.get(o, 0) / total:.0f} %)"
                 if counts.get(o) else "0" for o in present]
        lines.append(f"| {sweep} | {program} | {policy} | " + " | ".join(cells) + f" | {total} |")
    notable = [r for r in rows if r["outcome"] in ("sdc", "crash", "hang", "deadlock",
                                                   "emulator_error")][:30]
    if notable:
        lines += ["", "## Notable experiments (first 30)", "",
                  "| outcome | program | policy | fault | why | first line of stdout |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['outcome']} | {r['program']} | {r['policy']} | `{r['fault']}` | "
                  f"{_cell(r['why'] or '')} | {_cell(_first_line(r['record']))} |"
                  for r in notable]
    if groups:
        _plot(groups, present, out / "outcomes.png")
        lines += ["", "![outcome shares](outcomes.png)"]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "status.json").write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _plot(groups: dict[tuple[str, str, str], Counter[str]], present: list[str],
          path: Path) -> None:
    """Stacked bars: each sweep/program/policy's outcome shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s}\n{p}/{q}" for s, p, q in sorted(groups)]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(labels)), 4.2))
    bottoms = [0.0] * len(labels)
    for outcome in present:
        shares = []
        for key in sorted(groups):
            counts = groups[key]
            shares.append(100 * counts.get(outcome, 0) / sum(counts.values()))
        ax.bar(labels, shares, bottom=bottoms, label=outcome, color=COLORS.get(outcome))
        bottoms = [b + s for b, s in zip(bottoms, shares)]
    ax.set_ylabel("% of experiments")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "/").replace("\n", " ")


def _first_line(record: str | None) -> str:
    """The first line of a run's stdout, from its stored record."""
    if not record:
        return ""
    preview = json.loads(record).get("stdout_preview", "")
    return preview.splitlines()[0][:60] if preview else ""
