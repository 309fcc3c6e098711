"""The one code extractor (harness/workflows/extract.py): fences, prose, CRLF, bounds."""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from spogw.harness.workflows.extract import extract_code, extract_workflow, fenced_blocks
from tests.grader_corpus import FULL_SHAPES

FUNCTION = "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    return sum(xs)"


def test_fenced_blocks_tags_unclosed_and_tilde() -> None:
    text = "a\n```Python\nx = 1\n```\n~~~\ny = 2\n~~~\n```bash\nls\n```\n```python3\nz = 3"
    assert [(b.tag, b.content) for b in fenced_blocks(text)] == [
        ("python", "x = 1"),
        ("", "y = 2"),
        ("bash", "ls"),
        ("python3", "z = 3"),  # never closed: runs to the end
    ]


def test_blocks_in_another_language_are_not_code() -> None:
    reply = f"```python\n{FUNCTION}\n```\nRun it with:\n```bash\npython total.py\n```"
    assert extract_code(reply, "total") == FUNCTION
    assert extract_code("```text\nTrue\n```", "total") == "```text\nTrue\n```"  # nothing to run: text as it is


def test_the_last_block_defining_the_entry_point_wins() -> None:
    first = "def total(xs):\n    return 0"
    reply = f"```python\n{first}\n```\nBetter:\n```python\n{FUNCTION}\n```\n```python\nprint(total([1]))\n```"
    assert extract_code(reply, "total") == FUNCTION


def test_a_body_only_completion_stays_whole() -> None:
    body = "    return sum(xs)\n"
    assert extract_code(body, "total") == body.strip("\n")
    assert extract_code(f"```python\n{body}```", "total") == body.strip("\n")


def test_a_trailing_prose_word_that_parses_is_dropped() -> None:
    assert extract_code(f"{FUNCTION}\n\nDone", "total") == FUNCTION
    # a dotted word parses as attribute access: prose all the same (found by hypothesis in CI)
    assert extract_code(f"{FUNCTION}\nA.A", "total") == FUNCTION
    assert extract_code(f"e.g\n{FUNCTION}", "total") == FUNCTION
    # words that Python reads as constants or joins with keywords (the first found by hypothesis in CI)
    for words in ("False", "None", "...", "True.real", "not A", "A is not B", "A and B or C", "A if B else C"):
        assert extract_code(f"{FUNCTION}\n{words}", "total") == FUNCTION, words
        assert extract_code(f"{words}\n{FUNCTION}", "total") == FUNCTION, words
    assert extract_code(f"{FUNCTION}\nYes, None\npass", "total") == FUNCTION
    # code after the function stays: a call, an assignment, a comparison with an operator
    for code in ("print(total([1]))", "x = True", "total == total", "-A", "x: int = 1"):
        assert extract_code(f"{FUNCTION}\n{code}", "total") == f"{FUNCTION}\n{code}", code


def test_prose_shaped_like_an_annotation_is_dropped() -> None:
    """'Usage: total(xs)' parses as an annotation without a value; run, it raises NameError."""
    for prose in ("Usage: total(xs)", "Complexity: O(n)", "Example: total([1, 2]) == 3", "Note: see above"):
        assert extract_code(f"{FUNCTION}\n{prose}", "total") == FUNCTION, prose
        assert extract_code(f"{prose}\n{FUNCTION}", "total") == FUNCTION, prose
    assert extract_code(f"Answer: total\n{FUNCTION}\nUsage: total(xs)\nDone", "total") == FUNCTION
    assert extract_code(f"{FUNCTION}\ne.g: total([1])", "total") == FUNCTION  # a dotted name: the same


def test_prose_sharing_a_line_with_code_is_cut_at_its_column() -> None:
    """A statement after ';' is cut where it starts: the code before it on the line stays."""
    call = "print(total([1]))"
    assert extract_code(f"{FUNCTION}\n{call}; pass", "total") == f"{FUNCTION}\n{call}"
    assert extract_code(f"{FUNCTION}\n{call} ;  Done  ", "total") == f"{FUNCTION}\n{call}"
    assert extract_code(f"Résumé; {call}\n{FUNCTION}", "total") == f"{call}\n{FUNCTION}"  # ast counts bytes
    assert extract_code(f"Output; {call}; pass") == call  # no entry point asked for
    decorated = "import functools\n\n\n@functools.cache\ndef total(xs):\n    return sum(xs)"
    assert extract_code(f"Here\n{decorated}\nDone", "total") == decorated
    # what stands between the kept code and the dropped prose goes too: ';', a line continuation (review)
    assert extract_code(f"{FUNCTION}\n{call}; \\\nDone", "total") == f"{FUNCTION}\n{call}"
    assert extract_code(f"{FUNCTION}\nx = 1 \\\n\nDone", "total") == f"{FUNCTION}\nx = 1"


def test_a_final_line_continuation_before_a_blank_line_does_not_crash() -> None:
    """Valid only with the blank line after it: the extractor must not strip that line and then
    fail to parse its own result (found in review; a crash here stopped a whole collection)."""
    for text in ("def total(xs):\n    return sum(xs) \\\n\n", "x = 1 \\\n\n"):
        assert extract_code(text, "total" if "def" in text else None) == text
    assert extract_workflow("<graph>\nclass Workflow:\n    x = 1 \\\n\n</graph>") is not None


def test_usage_lines_after_the_workflow_go_statement_by_statement() -> None:
    """After ``class Workflow``, constants and definitions stay (a definition with its decorators);
    a usage statement sharing a line with a constant goes alone (found in review)."""
    workflow = "class Workflow:\n    x = 1"
    assert extract_workflow(f"{workflow}\nwf = Workflow(llm); MAX = 3") == f"{workflow}\nMAX = 3"
    helper = "@dataclass\nclass Result:\n    score: float"
    assert extract_workflow(f"{workflow}\n\n{helper}\nprint(Workflow)") == f"{workflow}\n{helper}"


def test_prose_on_lines_that_start_with_a_space_is_cut_and_a_truncated_body_is_not() -> None:
    """A line indented to a depth no earlier line has cannot continue the code (Python's
    IndentationError): it ends the region. A line at the body's own depth never does."""
    assert extract_code(f"{FUNCTION}\n ?", "total") == FUNCTION  # found by hypothesis in CI
    assert extract_code(f" ?\n{FUNCTION}\n ?", "total") == FUNCTION  # the depth before the code does not count
    assert extract_code(f"{FUNCTION}\n\xa0Note", "total") == FUNCTION  # U+00A0 is not indentation to Python
    assert extract_code(f"\n{FUNCTION}\n \n", "total") == FUNCTION  # blank lines of spaces at the ends
    truncated = "def total(xs):\n    s = 0\n    return (s +"
    assert extract_code(truncated, "total") == truncated  # never shortened into a valid definition
    # a comment's indentation means nothing to Python: it is no dedent to cut at (found in review)
    commented = "def total(xs):\n        s = 0\n    # running sum\n        return (s +"
    assert extract_code(commented, "total") == commented
    workflow = "class Workflow:\n    def __init__(self, llm):\n        self.llm = llm\n  # TODO\n"
    workflow += "    async def __call__(self, problem):\n        return await self.llm("
    assert extract_workflow(workflow) == workflow
    # a form feed is whitespace to Python, and a comment at column 0 inside a body ends nothing (review)
    for inside in ("\x0c", "# for x in xs:"):
        body = f"def total(xs):\n    s = 0\n{inside}\n    for x in xs:\n        s += (x +"
        assert extract_code(body, "total") == body, inside
        assert extract_code(f"{FUNCTION}\n{inside}\nDone", "total") == f"{FUNCTION}\n{inside}".rstrip("\x0c\n")
    # lines that continue a statement at column 0 (a string, brackets, a backslash) are inside the
    # body, not top-level lines (found in review: prompt templates in workflows are written so)
    for continued in ('s = """\n"""', "s = (1 +\n2)", "s = 1 + \\\n2"):
        body = f"def total(xs):\n    if xs:\n        {continued}\n        n = 1\n    return (s +"
        assert extract_code(body, "total") == body, continued
    template = "class Workflow:\n    def __init__(self, llm):\n        self.llm = llm\n"
    template += '        self.prompt = """Solve:\n{problem}\n"""\n        self.n = 3\n\n'
    template += "    async def __call__(self, problem):\n        return await self.llm("
    assert extract_workflow(template) == template
    assert extract_code(f"Note (see below:\n{FUNCTION}\nDone here", "total") == FUNCTION  # prose's '(' is not code
    fed = "def total(xs):\n    s = 0\n\x0c    for x in xs:\n        s += (x +"
    assert extract_code(fed, "total") == fed
    workflow = workflow.replace("  # TODO", "\x0c")
    assert extract_workflow(workflow) == workflow


def test_long_prose_is_searched_in_bounded_time() -> None:
    prose = "\n".join(f"from line {i} we learn that x is {i}" for i in range(3000))
    start = time.perf_counter()
    assert extract_code(prose, "total") == prose
    assert extract_workflow(prose) is None
    assert time.perf_counter() - start < 5.0


_WORDS = st.characters(whitelist_categories=("Ll", "Lu", "Zs"), whitelist_characters=".,!?:;")
_PROSE = st.text(alphabet=_WORDS, max_size=60)


@settings(max_examples=150, deadline=None)
@given(shape=st.sampled_from(sorted(FULL_SHAPES)), before=_PROSE, after=_PROSE)
@example(shape="raw", before="", after="A,")  # a prose word with a comma parses as a tuple
@example(shape="raw", before="Yes, I", after="A.b, c")
@example(shape="raw", before="", after="False")  # a word Python reads as a constant
@example(shape="raw", before="not I", after="A is B")  # words joined by keywords
@example(shape="raw", before=" ?", after=" ?")  # prose indented by a space, before and after
@example(shape="raw", before="Note: A; B", after="Usage: A.b; c")  # a name and a colon; statements on one line
def test_any_shape_with_any_prose_around_gives_the_code_back(shape: str, before: str, after: str) -> None:
    """Prose lines before and after any of the corpus's reply shapes never change the code found."""
    reply = f"{before}\n{FULL_SHAPES[shape](FUNCTION, 'total')}\n{after}"
    assert extract_code(reply, "total") == FUNCTION
