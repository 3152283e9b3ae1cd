"""The report of a comparison (:mod:`.reproduction`): ``reproduction.md`` for a reader (the
summary, where each side was made, a line per table, the verdicts that changed, the numbers
outside their tolerance) and ``reproduction.csv`` (every compared cell) beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..stages.fingerprint import describe
from ..stages.files import save_text
from .reproduction import (ALPHA, FRAGILE_CI, FRAGILE_P, LEVEL, OUTSIDE, REPORT, Comparison, Folder, as_float,
                           fmt_value)

PathLike = Union[str, Path]
LISTED = 60              # numbers outside their tolerance (and rows on one side only) listed in reproduction.md


def _machines(folder: Folder) -> str:
    """Where a folder's runs were made, from its coverage.json."""
    fps = folder.coverage.get("fingerprints") or {}
    made_on = folder.coverage.get("made_on") or {}
    if not fps:
        return "not recorded (made before fingerprints were kept)"
    uses: dict[str, int] = {}
    for stages in made_on.values():
        for key in set(stages.values()):
            uses[key] = uses.get(key, 0) + 1
    return "; ".join(f"`{k}` {describe(fp)} ({uses.get(k, 0)} runs)" for k, fp in fps.items())


def report_markdown(c: Comparison) -> str:
    """reproduction.md: the summary, where each side was made, a line per table, the verdicts
    that changed, the numbers outside their tolerance and the rows on one side only."""
    lines = [f"# Reproduction of '{c.reference.profile or c.reproduced.profile or '?'}'", "",
             f"Reference: `{c.reference.path}`; made on: {_machines(c.reference)}.", "",
             f"Reproduction: `{c.reproduced.path}`; made on: {_machines(c.reproduced)}.", "",
             f"**{c.summary()}**", "",
             "A number agrees when the two sides differ by less than their seed variation allows (a Welch "
             f"{LEVEL:.0%} interval from the std over seeds, or the model-level intervals of a difference of "
             "objectives); a verdict is *fragile* where either side is near its threshold (Holm p within a factor "
             f"of {FRAGILE_P:g} of {ALPHA:g}; a model-level interval whose end nearer to 0 is within "
             f"{FRAGILE_CI:g} of its half-width from 0). How: `xai_utils/analysis/reproduction.py`; every compared "
             "cell: `reproduction.csv`."]
    return "\n".join(lines + _tables(c) + _changed(c) + _outside(c) + _one_side(c)) + "\n"


def _tables(c: Comparison) -> list[str]:
    lines = ["", "## Tables", "",
             "| table | status | numbers compared | outside tolerance | verdicts compared | changed |",
             "|:---|:---|---:|---:|---:|---:|"]
    for name in c.reference.tables:
        if name in c.only_reference or name in c.identical:
            lines.append(f"| {name} | {'only in the reference' if name in c.only_reference else 'identical'} "
                         "| | | | |")
            continue
        t = c.cells[c.cells["table"] == name]
        out = int(t["status"].isin(OUTSIDE).sum())
        changed = int((t["status"] == "changed").sum())
        missing, added = len(c.rows_missing.get(name, [])), len(c.rows_added.get(name, []))
        status = "agrees" if not (out or changed or missing) else "differs"
        status += f"; {missing} rows only in the reference" if missing else ""
        status += f"; {added} rows only in the reproduction" if added else ""
        verdicts = int((t["kind"] == "verdict").sum())
        lines.append(f"| {name} | {status} | {int(t['numeric'].sum())} | {out} | {verdicts} | {changed} |")
    return lines + [f"| {name} | only in the reproduction | | | | |" for name in c.only_reproduced]


def _changed(c: Comparison) -> list[str]:
    if c.changed.empty:
        return []
    lines = ["", "## Verdicts that changed", "", "| table | comparison | level | reference | reproduction | fragile |",
             "|:---|:---|:---|:---|:---|:---|"]
    for r in c.changed.itertuples():
        reference, reproduction = r.detail.split(" -> ", 1)
        lines.append(f"| {r.table} | {r.row} | {r.level} | {reference} | {reproduction} | "
                     f"{'fragile' if r.fragile else ''} |")
    return lines


def _outside(c: Comparison) -> list[str]:
    out = c.cells[c.cells["status"].isin(OUTSIDE)] if len(c.cells) else c.cells
    if out.empty:
        return []
    out = out.assign(_excess=(out["difference"].abs() / out["tolerance"]).fillna(np.inf)) \
             .sort_values("_excess", ascending=False, kind="stable")
    lines = ["", "## Numbers outside their tolerance", "",
             f"{len(out)} numbers; the {min(len(out), LISTED)} furthest out (difference / tolerance):", "",
             "| table | row | column | reference | reproduction | difference | tolerance |",
             "|:---|:---|:---|---:|---:|---:|---:|"]
    for r in out.head(LISTED).itertuples():
        tolerance = "none (no seed spread)" if r.status == "no tolerance" else fmt_value(as_float(r.tolerance), 3)
        lines.append(f"| {r.table} | {r.row} | {r.column} | {fmt_value(as_float(r.reference), 4)} | "
                     f"{fmt_value(as_float(r.reproduced), 4)} | {fmt_value(as_float(r.difference), 3)} | {tolerance} |")
    return lines


def _one_side(c: Comparison) -> list[str]:
    lines: list[str] = []
    for title, rows in (("Rows of the reference missing from the reproduction", c.rows_missing),
                        ("Rows only in the reproduction", c.rows_added)):
        listed = [f"- {name}: {key}" for name, keys in rows.items() for key in keys]
        if listed:
            more = [f"- … {len(listed) - LISTED} more"] if len(listed) > LISTED else []
            lines += ["", f"## {title}", ""] + listed[:LISTED] + more
    return lines


def write_report(c: Comparison, folder: Optional[PathLike] = None) -> list[Path]:
    """Write ``reproduction.md`` and ``reproduction.csv`` (every compared cell that is not in
    an identical table) into ``folder`` (default: the reproduction's folder)."""
    folder = Path(folder) if folder else c.reproduced.path
    md = save_text(folder / f"{REPORT}.md", report_markdown(c))
    csv = save_text(folder / f"{REPORT}.csv", c.cells.to_csv(index=False))
    return [md, csv]
