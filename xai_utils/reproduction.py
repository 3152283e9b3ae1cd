"""Compare a reproduction with the study it reproduces: ``python -m xai_utils.reproduction``.

    python -m xai_utils.reproduction REFERENCE REPRODUCED     # two figures folders of one profile
    python -m xai_utils.reproduction --keep quick             # before `make reproduce`: keep the committed tables
    python -m xai_utils.reproduction --check quick            # after it: compare with them

The comparison (:mod:`xai_utils.analysis.reproduction`) writes ``reproduction.md`` and
``reproduction.csv`` into REPRODUCED and prints one line: numbers compared and outside their
tolerance, verdicts compared and changed. Exit status 0 when everything agrees, 1 when
anything differs beyond its tolerance (a verdict changed, a number outside, a table or row of
the reference missing), 2 for folders that cannot be compared (one line, nothing written).

``--keep PROFILE`` copies the committed tables of the profile's figures folder (from git's
HEAD; outside a git checkout, the folder as it is) to ``<results_root>/<profile>/committed-figures/``
before a reproduction overwrites them; ``--check PROFILE`` compares them with the folder
afterwards and exits 0 whatever moved (``make reproduce`` runs both around the pipeline).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from .analysis.reproduction import REPORT, ReproductionInputError, compare_folders
from .analysis.reproduction_report import write_report
from .errors import CommandLine, ConfigError
from .settings.profiles import load_profile

KEPT = "committed-figures"        # <results_root>/<profile>/committed-figures/


def compare(reference: str, reproduced: str, fail: bool = True) -> int:
    """Compare, write the report, print its path and the summary line; the exit status."""
    try:
        c = compare_folders(reference, reproduced)
    except ReproductionInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_report(c)
    print(f"reproduction report: {paths[0]} (every compared cell: {paths[1].name})")
    print(c.summary())
    return 0 if (c.agrees or not fail) else 1


def kept_folder(profile_name: str) -> tuple[Path, Path]:
    """(the profile's figures folder, where its committed tables are kept)."""
    profile = load_profile(profile_name)
    return profile.figures_dir(), Path(profile.results_root) / profile.name / KEPT


def keep(profile_name: str) -> int:
    """Keep the committed tables (and coverage.json) of a profile's figures folder."""
    figures, dest = kept_folder(profile_name)
    shutil.rmtree(dest, ignore_errors=True)
    source = _committed_files(figures)
    where = "as committed (git HEAD)"
    if source is None:
        source = {p.name: p.read_bytes() for p in sorted(figures.glob("*")) if _kept_name(p.name) and p.is_file()}
        where = "as it is before this run (not a git checkout)"
    if not any(n.endswith(".csv") for n in source):
        print(f"reproduction: no committed tables in {figures}: this run will not be compared with anything")
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in source.items():
        (dest / name).write_bytes(data)
    print(f"reproduction: kept {figures} {where} in {dest}, to compare this run with")
    return 0


def check(profile_name: str) -> int:
    """Compare the kept tables with the profile's figures folder; 0 whatever moved."""
    figures, dest = kept_folder(profile_name)
    if not dest.is_dir():
        print(f"reproduction: nothing kept to compare {figures} with (run --keep {profile_name} first)")
        return 0
    if not figures.is_dir():
        print(f"reproduction: {figures} was not made (the figures stage did not run): nothing compared")
        return 0
    coverage = figures / "coverage.json"
    if not coverage.is_file() or coverage.stat().st_mtime < dest.stat().st_mtime:
        print(f"reproduction: note: this run did not rewrite {figures} (a partial study writes "
              f"{figures.name}-partial/; a finished one skips its figures): comparing the tables it holds")
    return compare(str(dest), str(figures), fail=False)


def _kept_name(name: str) -> bool:
    return (name.endswith(".csv") and not name.startswith(REPORT)) or name == "coverage.json"


def _committed_files(folder: Path) -> Optional[dict[str, bytes]]:
    """The committed tables and coverage.json of ``folder`` from git's HEAD: {name: bytes};
    None outside a git checkout (or without git)."""
    folder = folder.resolve()
    cwd = next((p for p in (folder, *folder.parents) if p.is_dir()), Path.cwd())
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        rel = folder.relative_to(Path(top).resolve()).as_posix()
        names = subprocess.run(["git", "ls-tree", "--name-only", "HEAD", f"{rel}/"], cwd=top, capture_output=True,
                               text=True, check=True).stdout.split()
        return {Path(n).name: subprocess.run(["git", "show", f"HEAD:{n}"], cwd=top, capture_output=True,
                                             check=True).stdout
                for n in names if _kept_name(Path(n).name)}
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = CommandLine(prog="python -m xai_utils.reproduction",
                                 description="Compare a reproduction's tables and verdicts with a reference's.")
    ap.add_argument("reference", nargs="?", help="the reference figures folder (e.g. the committed figures/quick)")
    ap.add_argument("reproduced", nargs="?", help="the reproduced figures folder of the same profile")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when numbers or verdicts moved")
    ap.add_argument("--keep", metavar="PROFILE", help="keep the profile's committed tables before a reproduction")
    ap.add_argument("--check", metavar="PROFILE", help="compare the kept tables with the profile's figures folder")
    args = ap.parse_args(argv)
    modes = [bool(args.keep), bool(args.check), args.reference is not None]
    if sum(modes) != 1 or (args.reference is not None and args.reproduced is None):
        print("error: give REFERENCE REPRODUCED, or --keep PROFILE, or --check PROFILE", file=sys.stderr)
        return 2
    try:
        if args.keep:
            return keep(args.keep)
        if args.check:
            return check(args.check)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return compare(args.reference, args.reproduced, fail=not args.no_fail)


if __name__ == "__main__":
    sys.exit(main())
