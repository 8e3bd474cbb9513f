"""`emu campaign run | status | report`: what each subcommand does (emu/cli.py parses)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from emu.campaign.db import CampaignDb
from emu.campaign.pool import DaskPool, LocalPool, Pool
from emu.campaign.report import status, status_text, write_report
from emu.campaign.runner import Coordinator, Summary
from emu.campaign.spec import Campaign
from emu.errors import EmuError


def default_db(campaign_path: str) -> str:
    """The database beside the campaign file, named after it: `campaign.db` for
    `campaign.toml`, `NAME.db` for `NAME.toml` (so two campaigns of one folder do not
    share one)."""
    path = Path(campaign_path).resolve()
    return str(path.parent / f"{path.stem}.db")


def _open_db(path: str, must_exist: bool) -> CampaignDb:
    if must_exist and not os.path.exists(path):
        raise EmuError(f"no campaign database {path}")
    return CampaignDb(path)


def run(campaign_path: str, db_path: str | None, workers: int, dask: str | None,
        fast_forward: bool | None, group: int, quiet: bool = False) -> Summary:
    """Run a campaign (resuming where its database left off)."""
    campaign = Campaign.load(campaign_path)
    if fast_forward is not None:
        campaign = replace(campaign, settings=replace(campaign.settings,
                                                      fast_forward=fast_forward))
    db = _open_db(db_path or default_db(campaign_path), must_exist=False)
    try:
        known = db.meta("file")
        if known is not None and known != campaign.path:
            raise EmuError(f"{db.path} holds campaign {known}, not {campaign.path}")
        db.set_meta("file", campaign.path)
        db.set_meta("name", campaign.settings.name)
        pool: Pool = DaskPool(dask) if dask else LocalPool(workers or os.cpu_count() or 1)
        run_number = db.start_run()
        advance, close = (lambda done, total, what: None), (lambda: None)
        echo = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr))
        try:
            coordinator = Coordinator(campaign, db, pool, echo=echo)
            coordinator.goldens()
            total = coordinator.plan()
            if not quiet:
                advance, close = progress_bar(total)
            coordinator.progress = advance
            summary = coordinator.run(run_number, group)
        finally:
            close()
            pool.close()
        if not quiet:
            print(f"campaign {campaign.settings.name}: {summary.ran} experiment(s) run now, "
                  f"{summary.done_before} done before, {summary.total} in all "
                  f"({summary.seconds:.1f} s); outcomes now: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(summary.outcomes.items()))
                     or "none"))
        return summary
    finally:
        db.close()


def show_status(db_path: str, as_json: bool) -> str:
    """The status of a campaign database, as text or JSON."""
    db = _open_db(db_path, must_exist=True)
    try:
        doc = status(db)
    finally:
        db.close()
    return json.dumps(doc, indent=2) + "\n" if as_json else status_text(doc)


def report(db_path: str, out_dir: str) -> Path:
    """Write the report of a campaign database into `out_dir`."""
    db = _open_db(db_path, must_exist=True)
    try:
        return write_report(db, out_dir)
    finally:
        db.close()


def progress_bar(total: int):  # type: ignore[no-untyped-def]
    """A rich progress bar on stderr with rate and ETA: (advance(done, total, what), close)."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    bar = Progress(TextColumn("experiments"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   TextColumn("{task.fields[last]}"), console=Console(file=sys.stderr),
                   transient=False)
    task = bar.add_task("experiments", total=total, rate="", last="")
    bar.start()

    def advance(done: int, total_: int, what: str) -> None:
        speed = bar.tasks[0].speed
        bar.update(task, completed=done, total=total_, last=what,
                   rate=f"{speed:.1f}/s" if speed else "")
    return advance, bar.stop
