"""The front door (issue 31): the README is short, starts with the two commands, and links every page
of docs/; every relative link of the README and the pages leads to a file of the repository."""

import re

from airflow_fixtures import REPO

README = (REPO / "README.md").read_text()
PAGES = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_at_most_250_lines_and_starts_with_the_two_commands():
    assert len(README.splitlines()) <= 250
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"], ["make", "test"]]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target for target in LINK.findall(README) if target.startswith("docs/")}
    assert {f"docs/{page.name}" for page in PAGES} <= linked
    assert len(PAGES) >= 7  # the pipeline, the lake, the jobs, performance, AWS, Docker, operations


def test_every_relative_link_leads_to_a_file():
    for doc in [REPO / "README.md", *PAGES]:
        for target in LINK.findall(doc.read_text()):
            if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                assert (doc.parent / target).exists(), f"{doc.name}: {target}"
