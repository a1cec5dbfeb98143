"""The README starts people off plainly and keeps the figures at hand: its Quickstart gives the
two commands and what each does before any detail, and its Benchmarks section keeps the tables
while ``docs/benchmarks.md`` holds how each benchmark runs and what its figures mean."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import REPO_ROOT

README = REPO_ROOT / "README.md"
BENCHMARKS_DOC = REPO_ROOT / "docs" / "benchmarks.md"


def section(text: str, title: str) -> str:
    """The body of ``## title``, up to the next ``## `` heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"README.md has no '## {title}' section"
    return found.group(1)


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs: neither tables, code, headings nor list items."""
    blocks = [b.strip() for b in re.sub(r"```.*?```", "", text, flags=re.S).split("\n\n")]
    return [b for b in blocks if b and not b.startswith(("|", "#", "- "))]


def test_the_quickstart_says_the_two_commands_and_what_each_does_first() -> None:
    quickstart = section(README.read_text(), "Quickstart")
    commands = re.match(r"\s*```sh\n(.*?)```\n\s*(.*?)\n\n", quickstart, re.S)
    assert commands, "the Quickstart opens with the commands"
    assert commands.group(1).split("\n")[:2] == ["python3 dev.py demo", "python3 dev.py test"]
    said = commands.group(2).split("\n- ")
    assert [line.removeprefix("- ").split()[:3] for line in said] == [
        ["`python3", "dev.py", "demo`"], ["`python3", "dev.py", "test`"],
    ], "then one short item for each command, before the details"  # fmt: skip
    assert all(len(item.split()) <= 40 for item in said), said


def test_benchmarks_keep_their_tables_and_point_to_the_method_and_discussion() -> None:
    benchmarks = section(README.read_text(), "Benchmarks")
    doc = BENCHMARKS_DOC.read_text()

    assert "docs/benchmarks.md" in benchmarks
    tables = re.findall(r"^### (.+)\n\n(?:.+\n)*?\n?\|", benchmarks, re.M)
    assert tables == ["Broker", "Result backend", "Dead letters and recovery", "Control plane",
                      "Scaling out", "Soak"]  # fmt: skip
    long = [p for p in paragraphs(benchmarks) if len(p.split()) > 60]
    assert long == [], "the discussion belongs in docs/benchmarks.md"
    for script in sorted(set(re.findall(r"python (bench/\w+\.py)", benchmarks))):
        assert (REPO_ROOT / script).exists(), script
        assert f"python {script}" in doc, f"docs/benchmarks.md says how {script} runs"
    assert re.findall(r"^## (.+)$", doc, re.M) == tables
    assert "Against the targets" in doc and "Flower" in doc


def test_the_readme_links_resolve() -> None:
    for link in re.findall(r"\]\(((?!https?:|#)[^)#]+)", README.read_text()):
        assert (README.parent / link).exists(), link
    for link in re.findall(r"\]\(((?!https?:|#)[^)#]+)", BENCHMARKS_DOC.read_text()):
        assert (Path(BENCHMARKS_DOC.parent) / link).exists(), link
