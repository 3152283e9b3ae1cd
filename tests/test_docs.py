"""The front door and the docs: a README a newcomer reads in minutes, and links that resolve."""
import ast
import csv
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
README_LIMIT = 12_000


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation removed, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    out, seen, in_code = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [u for u in LINK.findall(text) if not re.match(r"^[a-z]+:", u)]


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= README_LIMIT                  # bytes, as a reader's tools count them
    assert "make reproduce" in text and "make test" in text
    assert "(docs/" in text                                   # the map of docs/


def test_every_docs_page_is_linked_from_the_readme_or_the_docs_index():
    linked = set()
    for page in (ROOT / "README.md", ROOT / "docs" / "README.md"):
        linked |= {(page.parent / u.partition("#")[0]).resolve() for u in relative_links(page)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked and p.name != "README.md"] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for url in relative_links(page):
        path, _, fragment = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(url)
        elif fragment and (target.suffix != ".md" or fragment not in anchors(target)):
            broken.append(url)
    assert broken == []


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](#a-title) [bad anchor](#nowhere) [bad file](missing.md) [web](https://x.org)\n")
    assert relative_links(page) == ["#a-title", "#nowhere", "missing.md"]
    assert anchors(page) == {"a-title"}


def test_make_help_names_every_profile():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    profiles = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert len(profiles) >= 7 and all(re.search(rf"\b{p}\b", out) for p in profiles), out


# Words about how the project was made rather than what it is: the docs speak of the product.
PROCESS_WORDS = ("session", "sessions", "issue", "issues", "goal", "goals", "lending", "lent", "landing",
                 "landings", "working period", "sprint", "ticket", "subagent", "of this project")
PROSE = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "configs").glob("*.yaml"),
                *(ROOT / "benchmarks").glob("*.md")])


def _process_words(text: str) -> list[str]:
    return sorted({w for w in PROCESS_WORDS if re.search(rf"\b{re.escape(w)}\b", text, flags=re.I)})


@pytest.mark.parametrize("page", PROSE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_prose_speaks_of_the_product_not_of_its_making(page):
    found = _process_words(page.read_text())
    assert not found, f"{page.relative_to(ROOT)} speaks of how it was made: {found}"


def test_the_process_word_check_sees_one():
    assert _process_words("Measured in the third working period, see the issue.") == ["issue", "working period"]
    assert _process_words("A tissue of excellent goalkeepers.") == []


def test_the_api_reference_is_the_codes():
    """docs/api.md is what `python -m xai_utils.reference` makes from the code (`make api-docs`):
    every public function and class of every module, with its signature and docstring's first line."""
    from xai_utils.reference import reference
    made = reference()
    # the same text in every checkout: no absolute path of this one (CI clones elsewhere)
    assert str(ROOT.resolve()) not in made and "<repository>/requirements.lock" in made
    assert (ROOT / "docs" / "api.md").read_text() == made, "docs/api.md is stale: run make api-docs"
    for name in ("xai_utils.api", "xai_utils.ops.metrics.faithfulness", "xai_utils.analysis.stats",
                 "xai_utils.study.brought"):
        assert f"### `{name}`" in made
    assert "- `evaluate(model" in made and "- `compare_objectives(df" in made


# ----------------------------------------------------------------------------- what the docs name exists

CODE_PAGES = [p for p in PAGES if p.name != "api.md"]       # api.md is made from the code itself
# flags of other programs that the docs quote, and the program
OTHER_FLAGS = {"--compile-bytecode": "uv pip install", "--time": "sbatch"}


def code_of(text: str) -> list[str]:
    """The commands and code a page quotes: its code blocks' lines and its `code spans`."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return [line for b in blocks for line in b.splitlines()] + re.findall(r"`([^`\n]+)`", prose)


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def command_line_flags() -> set[str]:
    """Every ``--flag`` an ``add_argument`` call of the package or the benchmarks declares."""
    flags = {"--help"}
    for path in [*(ROOT / "xai_utils").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def named(pattern: str, pages=CODE_PAGES) -> dict[str, list[str]]:
    """Each match of ``pattern`` (its first group) in the quoted code of ``pages`` -> the pages."""
    found: dict[str, list[str]] = {}
    for page in pages:
        for code in code_of(page.read_text()):
            for m in re.finditer(pattern, code):
                found.setdefault(m.group(1), []).append(page.name)
    return found


def test_every_make_target_the_docs_name_exists():
    quoted = named(r"\bmake ([a-z][a-z-]*)")
    assert {"reproduce", "test", "figures", "lab"} <= set(quoted)
    missing = {t: pages for t, pages in quoted.items() if t not in make_targets()}
    assert not missing, f"make targets the docs name but the Makefile lacks: {missing}"


def test_every_command_line_flag_the_docs_name_exists():
    quoted = named(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
    assert {"--profile", "--set", "--executor", "--slurm-cpus-per-run", "--no-progress", "--devices"} <= set(quoted)
    missing = {f: pages for f, pages in quoted.items() if f not in command_line_flags() | set(OTHER_FLAGS)}
    assert not missing, f"flags the docs name that no command line declares: {missing}"


def test_every_setting_the_docs_name_exists():
    """`--set key=value` and the keys of every YAML block: profile keys, or run settings under
    ``settings: <selector>:`` (a dotted key sets one entry of a mapping-valued setting)."""
    from xai_utils.settings import PROFILE_KEYS
    from xai_utils.settings.run_config import RUN_KEYS
    bad = [(page, key) for key, pages in named(r"--set[ =]['\"]?([a-z_][a-z0-9_.]*)=").items() for page in pages
           if key.split(".")[0] not in set(RUN_KEYS) | set(PROFILE_KEYS)]
    blocks = 0
    for page in CODE_PAGES:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.S):
            profile = yaml.safe_load(block)
            blocks += 1
            bad += [(page.name, k) for k in profile if k not in PROFILE_KEYS]
            for selector, keys in (profile.get("settings") or {}).items():
                bad += [(page.name, f"settings.{selector}.{k}") for k in keys or {} if k not in RUN_KEYS]
    assert blocks >= 1 and not bad, f"settings the docs name that do not exist: {bad}"


def test_the_docs_checks_see_a_wrong_name(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Run `make reproducee`, then `python -m xai_utils.pipeline --profiel quick --set epoch=3`.\n")
    assert named(r"\bmake ([a-z][a-z-]*)", [page]) == {"reproducee": ["page.md"]}
    assert "reproducee" not in make_targets() and "--profiel" not in command_line_flags()
    assert set(named(r"(?<![\w-])(--[a-z][a-z0-9-]*)", [page])) == {"--profiel", "--set"}


def test_the_run_folder_tree_names_every_file_of_a_run():
    """docs/pipeline-and-settings.md's tree of a run folder names every file and folder of the
    layout (xai_utils.settings.layout), so a new file cannot go unmentioned."""
    from xai_utils.settings import layout
    page = (ROOT / "docs" / "pipeline-and-settings.md").read_text()
    tree = page.split("## What a run writes", 1)[1].split("```", 2)[1]
    names = [layout.CONFIG, layout.TRAIN_LOG, layout.CHECKPOINT, layout.PREVIOUS_CHECKPOINT, layout.MODEL,
             layout.TRAIN_SUMMARY, layout.PREDICTIONS, layout.EMBEDDINGS, layout.CALIBRATION, layout.RESULTS,
             layout.FINGERPRINT, *(f"{d}/" for d in (layout.ATTRIBUTIONS, layout.PAIRS, layout.CURVES, layout.STAGES,
                                                     layout.NOTEBOOKS, layout.PROTOCOLS))]
    missing = [n for n in names if n not in tree]
    assert not missing, f"the run-folder tree omits {missing}"


# Each results page and the committed tables it quotes (figures/<folder>/*.csv).
QUOTED_TABLES = {"README.md": ("quick", "seeds", "extensions"),
                 "docs/results-quick.md": ("quick", "reproductions/quick-intel-xeon",
                                           "reproductions/quick-amd-epyc-avx2"),
                 "docs/results-seeds.md": ("seeds", "reproductions/seeds-intel-xeon",
                                           "reproductions/seeds-amd-epyc-avx2"),
                 "docs/results-extensions.md": ("extensions",), "docs/pairs.md": ("quick",),
                 "docs/results-planted.md": ("planted",),
                 "docs/protocol-and-deviations.md": tuple(f"deviations/{name}/quick" for name in (
                     "corrected", "eigencam_sign", "noise_space", "black", "nan_pairing", "tie_break"))}
# numbers of those pages that no committed table holds, and where the page says they come from
NOT_FROM_A_TABLE = {("README.md", "2604.22540"): "the paper's arXiv number",
                    ("docs/results-seeds.md", "2.23"): "a ratio of two gaps of table_claim_robustness",
                    ("docs/results-seeds.md", "86.88"): "the 20,000-image run the page names (not committed)",
                    ("docs/results-seeds.md", "0.70"): "the same",
                    ("docs/results-seeds.md", "84.10"): "the same",
                    ("docs/results-seeds.md", "0.449"): "the same",
                    ("docs/protocol-and-deviations.md", "2604.22540"): "the paper's arXiv number",
                    ("docs/protocol-and-deviations.md", "0.996"): "sqrt(127/128), the formula beside it",
                    ("docs/results-planted.md", "0.125"): "a sign test's p for three seeds of three, as the page says"}
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{2,}(?![\w.])")


def table_numbers(folders) -> set[str]:
    """Every number of the committed CSV tables of ``folders``, as it reads at 1 to 4 decimals
    (not ``reproduction.csv``, which ``make reproduce`` writes beside them and git ignores)."""
    out = set()
    for folder in folders:
        for path in sorted((ROOT / "figures" / folder).glob("*.csv")):
            if path.name == "reproduction.csv":
                continue
            for row in csv.reader(path.open()):
                for cell in row:
                    try:
                        value = abs(float(cell))
                    except ValueError:
                        continue
                    out |= {f"{value:.{d}f}" for d in range(1, 5)}
    return out


@pytest.mark.parametrize("page", sorted(QUOTED_TABLES))
def test_every_number_a_results_page_quotes_is_in_its_tables(page):
    """A number with two or more decimals on a results page is a committed table's, rounded as
    quoted (or listed above with where the page says it comes from)."""
    held = table_numbers(QUOTED_TABLES[page])
    quoted = NUMBER.findall((ROOT / page).read_text())
    assert len(quoted) > 10
    stray = sorted({n for n in quoted if n.lstrip("-") not in held and (page, n.lstrip("-")) not in NOT_FROM_A_TABLE})
    assert not stray, f"{page} quotes numbers no committed table of {QUOTED_TABLES[page]} holds: {stray}"


def test_the_number_check_sees_a_misquote():
    held = table_numbers(("quick",))
    assert "80.57" in held and "80.58" not in held and "0.1713" in held


def test_the_profiles_point_to_pages_and_sections_that_exist():
    """The comments of configs/*.yaml name docs pages (and sections) a clone has."""
    named = [(p.name, page, anchor) for p in sorted((ROOT / "configs").glob("*.yaml"))
             for page, anchor in re.findall(r"docs/([\w-]+\.md)(?:#([\w-]+))?", p.read_text())]
    assert len(named) >= 7
    broken = [(c, page, anchor) for c, page, anchor in named
              if not (ROOT / "docs" / page).is_file() or (anchor and anchor not in anchors(ROOT / "docs" / page))]
    assert not broken, f"profiles point to pages or sections that do not exist: {broken}"
