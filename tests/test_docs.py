"""docs/: the generated register map is what the code renders now, the golden model's examples
print what docs/golden-model.md shows, every citation of the
design document in the code names a section (or a quoted title) that docs/design.md has,
and docs/README.md lists every page.  Fast: no simulator, no Verilog; but the RTL examples of
docs/performance.md, which run the default chip (slow)."""
import re
from pathlib import Path

import pytest

from refree.gen import docs

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
SCANNED = ("hw", "gen", "golden", "verif", "tests")

DOC = r"(?:DESIGN\.md|docs/design\.md)"    # (the old name of the document, outside the repository, too)
SEP = r"[\s#]+"                         # spaces, line breaks and comment marks between words
NUMS = r"(\d+)(?:" + SEP + r"(?:to|and)" + SEP + r"(\d+))?"
SECTION = r"(?:sections?|sec\.)" + SEP + NUMS
#: "docs/design.md section 3", "docs/design.md's (section 3", "sections 3 to 5", "sec. 3" ...
AFTER = re.compile(DOC + r"(?:'s)?[\s#(,]*" + SECTION)
#: "section 2 of docs/design.md"
BEFORE = re.compile(SECTION + SEP + r"of" + SEP + r"(?:the" + SEP + r")?" + DOC)
#: quoted titles: 'docs/design.md section 3, "Bounds of a job"', 'docs/design.md, "Arithmetic
#: contract"', 'section 2 of docs/design.md ("Counting")'
TITLE = re.compile(r"(?:" + DOC + r"(?:" + SEP + r"section" + SEP + r"\d+)?,|" + r"section" + SEP + r"\d+"
                   + SEP + r"of" + SEP + DOC + r")[\s#(]*\"([^\"\n]+)\"")


def scanned_files():
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts \
                    and path != Path(__file__).resolve():       # (this file's samples are no citations)
                yield path


def citations():
    """``[(file:line, section numbers, quoted title or None)]`` of every citation."""
    out = []
    for path in scanned_files():
        text = path.read_text()
        where = lambda m: f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
        for rx in (AFTER, BEFORE):
            for m in rx.finditer(text):
                lo = int(m.group(1))
                hi = int(m.group(2)) if m.group(2) else lo
                out.append((where(m), list(range(lo, hi + 1)), None))
        for m in TITLE.finditer(text):
            out.append((where(m), [], m.group(1)))
    return out


def design_sections():
    text = DESIGN.read_text()
    numbers = {int(n) for n in re.findall(r"^## (\d+)\. ", text, re.M)}
    titles = {t.strip().lower() for t in re.findall(r"^#{2,4} (?:\d+\. )?(.+)$", text, re.M)}
    return numbers, titles


def test_the_block_diagram_is_what_the_code_renders():
    """docs/blocks.md is the elaborated hierarchy of the default chip (about 10 s)."""
    committed = (ROOT / "docs" / "blocks.md").read_text()
    assert committed == docs.block_diagram_markdown(), \
        "docs/blocks.md is out of date: run `python -m refree.gen.docs`"
    assert "FusedMultiplyAdd" in committed and "RankController" in committed


def test_the_register_map_is_what_the_code_renders():
    committed = (ROOT / "docs" / "register-map.md").read_text()
    assert committed == docs.register_map_markdown(), \
        "docs/register-map.md is out of date: run `python -m refree.gen.docs`"


def test_design_sections_are_numbered_one_to_seven():
    numbers, _ = design_sections()
    assert numbers == set(range(1, 8))


def test_every_citation_of_the_design_names_a_section_it_has():
    numbers, titles = design_sections()
    found = citations()
    assert any(n for _, n, _ in found), "no citation found: has the pattern of the citations changed?"
    bad = [(where, n) for where, ns, _ in found for n in ns if n not in numbers]
    assert not bad, f"cited sections that docs/design.md does not have: {bad}"
    bad = [(where, title) for where, _, title in found
           if title is not None and not any(title.lower() in t for t in titles)]
    assert not bad, f"quoted titles that are no heading of docs/design.md: {bad}"


def test_the_citation_patterns_read_the_forms_the_code_uses():
    samples = {"(docs/design.md section 2)": [2], "docs/design.md's (section 3, revised)": [3],
               "docs/design.md sections 3 to 5": [3, 4, 5], "docs/design.md sec. 3": [3],
               "docs/design.md section\n    # 4": [4], "section 2 of docs/design.md": [2]}
    for text, want in samples.items():
        got = [list(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
               for rx in (AFTER, BEFORE) for m in rx.finditer(text)]
        assert got == [want], text
    assert [m.group(1) for m in TITLE.finditer('docs/design.md section 3, "Bounds of a job"')] \
        == ["Bounds of a job"]
    assert [m.group(1) for m in TITLE.finditer('section 2 of docs/design.md ("Counting")')] == ["Counting"]
    assert [m.group(1) for m in TITLE.finditer('docs/design.md, "Arithmetic contract"')] == ["Arithmetic contract"]


def test_the_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md")
    assert pages and all(f"({name})" in index for name in pages), pages


def documented_runs(page):
    """``[(argv, shown lines)]`` of every ``$ refree ...`` in the page's code blocks: the
    lines it shows up to the next command, the block's end or a ``...`` (the rest left out)."""
    runs, current, inside = [], None, False
    for line in (ROOT / "docs" / page).read_text().splitlines():
        if line.startswith("```"):
            inside, current = not inside, None
        elif inside and line.startswith("$ refree "):
            current = (line[len("$ refree "):].split(), [])
            runs.append(current)
        elif inside and current is not None:
            if line.strip() == "...":
                current = None
            else:
                current[1].append(line.rstrip())
    return runs


def check_documented_runs(runs, capsys):
    """Run each ``(argv, shown)`` as written: it must print the lines shown, a shown line that
    ends in ``...`` standing for any line that begins with what precedes it."""
    from refree.gen.cli import main
    for argv, shown in runs:
        assert main(argv) == 0, f"refree {' '.join(argv)}"
        printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
        while shown and not shown[-1]:
            shown.pop()
        assert len(printed) >= len(shown), f"refree {' '.join(argv)}"
        for want, got in zip(shown, printed):
            assert got.startswith(want[:-3]) if want.endswith("...") else got == want, \
                f"refree {' '.join(argv)}: {got!r}, not {want!r}"


def test_the_golden_model_examples_print_what_the_docs_show(capsys):
    """docs/golden-model.md's reports, run as written: each prints the lines shown (the page
    may stop early, at a `...`).  A change of the counts or of the report's layout fails it."""
    runs = documented_runs("golden-model.md")
    assert len(runs) >= 3
    check_documented_runs(runs, capsys)


@pytest.mark.slow
def test_the_rtl_examples_print_what_the_docs_show(capsys):
    """docs/performance.md's runs of the RTL (the main job, and int32 input), as written: the
    verdicts shown (bit-identical, counters equal) are what they print."""
    runs = documented_runs("performance.md")
    assert [argv[0] for argv, _ in runs] == ["rtl-check", "rtl-check"]
    check_documented_runs(runs, capsys)
