"""The front door and the docs: a README a newcomer reads in minutes, and links that resolve."""
import re
import subprocess
from pathlib import Path

import pytest

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
