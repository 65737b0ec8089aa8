"""The project cites only files it contains, and only sections its reference has.

Every text file of the repository (tracked, or new and not ignored) is scanned for:
- Markdown file names that are not in the repository (a team note, a file
  beside the checkout);
- relative paths that climb out of the repository, and the paper's own files
  (the supplementary text, a `paper/` folder), which the repository does not hold;
- citations "docs/reference.md, SECTION" whose SECTION is not a heading of
  docs/reference.md, and links to docs/reference.md#ANCHOR with an unknown anchor.
"""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "docs/reference.md"
THIS_FILE = os.path.relpath(os.path.abspath(__file__), ROOT)

_MARKDOWN_NAME = re.compile(r"(?<![\w./-])((?:\.{1,2}/)*[\w/-]*\w\.md)\b")
_CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-]+)")
_PAPER_FILES = re.compile(r"(?<![\w])(?:paper/|supplementary\.txt)")
_CITATION = re.compile(r"docs/reference\.md,")
_ANCHOR = re.compile(r"(?:docs/)?reference\.md#([\w-]+)")
_OWN_ANCHOR = re.compile(r"\]\(#([\w-]+)\)")
_SKIPPED_FOLDERS = {"__pycache__", "runs", "work_dirs", "exports", "outputs"}


def _repository_files():
    """Paths relative to the root: git's tracked and unignored files, else a walk."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        listing = []
        for folder, subfolders, names in os.walk(ROOT):
            subfolders[:] = [
                d for d in subfolders if not d.startswith(".") and d not in _SKIPPED_FOLDERS
            ]
            listing += [os.path.relpath(os.path.join(folder, n), ROOT) for n in names]
    return sorted(p for p in listing if os.path.isfile(os.path.join(ROOT, p)))


def _text(path):
    """The file's text, or None for binary files."""
    with open(os.path.join(ROOT, path), "rb") as file:
        data = file.read()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _headings(markdown):
    """Heading texts of a Markdown document, outside code blocks."""
    headings, in_code = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            headings.append(line.lstrip("#").strip())
    return headings


def _anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def citation_problems(path, text, files, headings):
    """What `text` (the contents of `path`) cites that the repository does not have.

    Args:
        path: the file's path relative to the repository root.
        text: its contents.
        files: every file of the repository, relative to the root.
        headings: the headings of docs/reference.md.

    Returns:
        One line per problem, naming the file, the line and the citation.
    """
    folder = os.path.dirname(path)
    names = {os.path.basename(f) for f in files}
    anchors = {_anchor(h) for h in headings}
    problems = []

    def report(match, what):
        line = text.count("\n", 0, match.start()) + 1
        problems.append(f"{path}:{line}: {what}: {match.group(0)!r}")

    for match in _MARKDOWN_NAME.finditer(text):
        name = match.group(1)
        candidates = {
            os.path.normpath(name),
            os.path.normpath(os.path.join(folder, name)),
        }
        if "/" not in name and name in names:
            continue
        if not candidates & set(files):
            report(match, "a Markdown file the repository does not hold")
    for match in _CLIMB.finditer(text):
        target = os.path.normpath(os.path.join(folder, match.group(1)))
        if target.startswith(".."):
            report(match, "a path outside the repository")
    for match in _PAPER_FILES.finditer(text):
        report(match, "one of the paper's files, which the repository does not hold")
    for match in _CITATION.finditer(text):
        # Sections may wrap onto the next line, behind a comment marker.
        following = text[match.end() : match.end() + 200]
        following = re.sub(r"\s*\n\s*(?:#\s*)?", " ", following).lstrip()
        if not any(re.match(re.escape(h) + r"(?!\w)", following) for h in headings):
            report(match, f"a section docs/reference.md does not have: {following[:40]!r}")
    links = list(_ANCHOR.finditer(text))
    if path == REFERENCE:
        links += _OWN_ANCHOR.finditer(text)
    for match in links:
        if match.group(1) not in anchors:
            report(match, "an anchor docs/reference.md does not have")
    return problems


@pytest.fixture(scope="module")
def repository():
    files = _repository_files()
    assert REFERENCE in files
    with open(os.path.join(ROOT, REFERENCE), encoding="utf-8") as file:
        headings = _headings(file.read())
    return files, headings


def test_repository_cites_only_what_it_holds(repository):
    files, headings = repository
    problems = []
    for path in files:
        text = _text(path)
        if text is not None and path != THIS_FILE:
            problems += citation_problems(path, text, files, headings)
    assert not problems, "\n".join(problems)


def test_reference_is_linked_from_readme_and_build(repository):
    for document in ("README.md", "BUILD.md"):
        with open(os.path.join(ROOT, document), encoding="utf-8") as file:
            assert "](docs/reference.md" in file.read(), document


@pytest.mark.parametrize(
    "text, problem",
    [
        ("as TEAM_NOTES.md says", "Markdown file"),
        ("see notes/TEAM_NOTES.md", "Markdown file"),
        ("copied from ../../elsewhere/notes", "outside the repository"),
        ("Table 3 of paper/supplement", "paper's files"),
        ("(docs/reference.md, No Such Section)", "section"),
        ("(docs/reference.md,\n    # Trainingwheels)", "section"),
        ("[HOG](docs/reference.md#no-such-anchor)", "anchor"),
        ("[HOG](#no-such-anchor)", "anchor"),
    ],
)
def test_checker_finds_outside_citations(repository, text, problem):
    files, headings = repository
    problems = citation_problems(REFERENCE, text, files, headings)
    assert len(problems) == 1 and problem in problems[0], problems


def test_checker_accepts_citations_of_the_repository(repository):
    files, headings = repository
    text = (
        "See BUILD.md, ../README.md and docs/reference.md, HOG; the\n"
        "# docs/reference.md,\n# Generic decoder rule; [x](reference.md#table-2-hog)."
    )
    assert citation_problems("docs/example.md", text, files, headings) == []
