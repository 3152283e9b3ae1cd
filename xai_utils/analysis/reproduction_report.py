"""The report of a comparison (:mod:`.reproduction`): ``reproduction.md`` for a reader (the
summary, where each side was made, a line per table, the verdicts that changed, the numbers
outside their tolerance) and ``reproduction.csv`` (every compared cell) beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..stages.fingerprint import describe
from ..stages.layout import save_text
from .reproduction import REPORT, Comparison, Folder, as_float, fmt_value

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
    that changed and the numbers outside their tolerance."""
    lines = [f"# Reproduction of '{c.reference.profile or c.reproduced.profile or '?'}'", "",
             f"Reference: `{c.reference.path}`; made on: {_machines(c.reference)}.", "",
             f"Reproduction: `{c.reproduced.path}`; made on: {_machines(c.reproduced)}.", "",
             f"**{c.summary()}**", "",
             "A number agrees when the two sides differ by less than their seed variation allows (a Welch 95 % "
             "interval from the std over seeds, or the model-level intervals of a difference of objectives); "
             "a verdict is *fragile* where either side is near its threshold (Holm p within a factor of 5 of "
             "0.05; a model-level interval whose end nearer to 0 is within a quarter of its half-width from 0). "
             "How: `xai_utils/analysis/reproduction.py`; every compared cell: `reproduction.csv`.", "",
             "## Tables", "", "| table | status | numbers compared | outside tolerance | verdicts compared | changed |",
             "|:---|:---|---:|---:|---:|---:|"]
    for name in c.reference.tables:
        if name in c.only_reference:
            lines.append(f"| {name} | only in the reference | | | | |")
        elif name in c.identical:
            lines.append(f"| {name} | identical | | | | |")
        else:
            t = c.cells[c.cells["table"] == name]
            out = int(t["status"].isin(["outside", "no tolerance"]).sum())
            ch = int((t["status"] == "changed").sum())
            extra = len(c.rows_missing.get(name, []))
            status = "agrees" if not (out or ch or extra) else "differs"
            if extra:
                status += f"; {extra} rows only in the reference"
            if c.rows_added.get(name):
                status += f"; {len(c.rows_added[name])} rows only in the reproduction"
            verdicts = int((t["kind"] == "verdict").sum())
            lines.append(f"| {name} | {status} | {int(t['numeric'].sum())} | {out} | {verdicts} | {ch} |")
    for name in c.only_reproduced:
        lines.append(f"| {name} | only in the reproduction | | | | |")
    changed = c.changed
    if len(changed):
        lines += ["", "## Verdicts that changed", "",
                  "| table | comparison | level | reference | reproduction | fragile |",
                  "|:---|:---|:---|:---|:---|:---|"]
        for r in changed.itertuples():
            ref_text, rep_text = r.detail.split(" -> ", 1)
            fragile = "fragile" if r.fragile else ""
            lines.append(f"| {r.table} | {r.row} | {r.level} | {ref_text} | {rep_text} | {fragile} |")
    out = c.cells[c.cells["status"].isin(["outside", "no tolerance"])] if len(c.cells) else c.cells
    if len(out):
        out = out.assign(_excess=(out["difference"].abs() / out["tolerance"]).fillna(np.inf)) \
                 .sort_values("_excess", ascending=False, kind="stable")
        lines += ["", "## Numbers outside their tolerance", "",
                  f"{len(out)} numbers; the {min(len(out), LISTED)} furthest out (difference / tolerance):", "",
                  "| table | row | column | reference | reproduction | difference | tolerance |",
                  "|:---|:---|:---|---:|---:|---:|---:|"]
        for r in out.head(LISTED).itertuples():
            lines.append(f"| {r.table} | {r.row} | {r.column} | {fmt_value(as_float(r.reference), 4)} | "
                         f"{fmt_value(as_float(r.reproduced), 4)} | {fmt_value(as_float(r.difference), 3)} | "
                         f"{'none (no seed spread)' if r.status == 'no tolerance' else fmt_value(as_float(r.tolerance), 3)} |")
    for title, rows in (("Rows of the reference missing from the reproduction", c.rows_missing),
                        ("Rows only in the reproduction", c.rows_added)):
        listed = [(n, k) for n, ks in rows.items() for k in ks]
        if listed:
            lines += ["", f"## {title}", ""] + [f"- {n}: {k}" for n, k in listed[:LISTED]]
            if len(listed) > LISTED:
                lines.append(f"- … {len(listed) - LISTED} more")
    return "\n".join(lines) + "\n"


def write_report(c: Comparison, folder: Optional[PathLike] = None) -> list[Path]:
    """Write ``reproduction.md`` and ``reproduction.csv`` (every compared cell that is not in
    an identical table) into ``folder`` (default: the reproduction's folder)."""
    folder = Path(folder) if folder else c.reproduced.path
    md = save_text(folder / f"{REPORT}.md", report_markdown(c))
    csv = save_text(folder / f"{REPORT}.csv", c.cells.to_csv(index=False))
    return [md, csv]
