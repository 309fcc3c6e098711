"""Code in a model's reply: the one extractor for graded code answers and generated workflows.

Models write code in many shapes: ```` ```python ````, ```` ```Python ````, ```` ```python3 ````,
```` ```py ```` or bare ```` ``` ```` fences (``~~~`` too), prose before and after, a usage example in
a fence of its own, CRLF line ends, a fence that is never closed, or no fence at all. ScoreFlow's
generators put the workflow inside ``<graph>...</graph>``. The rules, in order:

1. Line ends become ``\\n``; inside a ``<graph>`` pair (or an unclosed ``<graph>``) only its content counts.
2. Fenced blocks tagged as Python (or untagged) are candidates; blocks tagged with another language
   (``text``, ``bash``, ``output``...) are not code to run.
3. The chosen block is the last one that defines the wanted name (the entry point, ``Workflow``);
   without a wanted name, or when no block defines it, the last block that defines anything, else
   the last block.
4. With no candidate block, the text itself is searched.
5. Text that does not parse is cut to the longest region that does: it starts at a top-level line
   that opens code (``def``, ``class``, ``import``, ``from``, ``@``) and ends at the end or before a
   top-level line, so prose before and after the code goes but a truncated definition is never
   shortened into a valid one. Text in which no region parses is returned as it is (a body-only
   completion, indented, stays whole).

`extract_code` serves the graders (harness/benchmarks/humaneval.py, mbpp.py, the Test and Programmer
operators) and `extract_workflow` the generator's completions: both are this one function.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

GRAPH_CLOSE = "</graph>"
_GRAPH = re.compile(r"<graph>(.*?)(?:</graph>|$)", re.DOTALL)
_FENCE_LINE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$")
PYTHON_TAGS = frozenset({"", "python", "python3", "py", "py3", "python2", "ipython", "pycon", "sage"})
_CODE_START = re.compile(r"(?:async[ \t]+def|def|class)[ \t]+\w|(?:import|from)[ \t]+[\w.]|@\w")
_ANY_DEFINITION = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)[ \t]+\w", re.MULTILINE)
MAX_PARSE_TRIES = 400
"""Regions tried per text before giving up (each try is a parse; replies are rarely long)."""


@dataclass(frozen=True)
class Fenced:
    """One fenced block: its info-string tag (lower case, '' when none) and its content."""

    tag: str
    content: str


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def fenced_blocks(text: str) -> list[Fenced]:
    """The fenced blocks of ``text`` (``\\n`` line ends) in order. A fence closes at a line of the
    same character at least as long as the opening one; an unclosed fence runs to the end."""
    blocks: list[Fenced] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE_LINE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, tag = opening.group(1), opening.group(2).lower()
        body: list[str] = []
        index += 1
        while index < len(lines):
            stripped = lines[index].strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                break
            if stripped.endswith(fence):  # the closing fence written at the end of the last line
                body.append(lines[index].rstrip()[: -len(fence)])
                break
            body.append(lines[index])
            index += 1
        blocks.append(Fenced(tag, "\n".join(body)))
        index += 1
    return blocks


def definition_pattern(name: str) -> re.Pattern[str]:
    """A top-level-or-nested ``def name(`` / ``async def name(`` / ``class name`` line."""
    escaped = re.escape(name)
    return re.compile(rf"^[ \t]*(?:(?:async[ \t]+)?def[ \t]+{escaped}[ \t]*\(|class[ \t]+{escaped}\b)", re.MULTILINE)


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False
    return True


def _is_name(value: ast.expr) -> bool:
    while isinstance(value, ast.Attribute):
        value = value.value
    return isinstance(value, ast.Name)


def _is_lone_word(statement: ast.stmt) -> bool:
    """A bare name or dotted name ('Output', 'A.A', 'e.g'), or a tuple of them ('A,', 'Yes, I'):
    prose that parses, and does nothing when run but raise NameError."""
    if not isinstance(statement, ast.Expr):
        return False
    value = statement.value
    if isinstance(value, ast.Tuple):
        return bool(value.elts) and all(_is_name(element) for element in value.elts)
    return _is_name(value)


def _drop_lone_words(source: str) -> str:
    """Remove leading and trailing top-level statements that are a lone (dotted) name: a prose word
    such as 'Output', 'A' or 'A.A' that happens to parse, and would raise NameError when run."""
    body = ast.parse(source).body
    lines = source.split("\n")
    first, last = 0, len(body)
    while last - first > 1 and _is_lone_word(body[last - 1]):
        last -= 1
    while last - first > 1 and _is_lone_word(body[first]):
        first += 1
    end = body[last].lineno - 1 if last < len(body) else len(lines)
    decorators = getattr(body[first], "decorator_list", [])
    start = min([body[first].lineno, *(d.lineno for d in decorators)]) - 1 if first > 0 else 0
    return "\n".join(lines[start:end]).strip("\n")


def parseable_region(text: str, wanted: re.Pattern[str] | None = None) -> str | None:
    """The longest region of ``text`` that parses (rule 5) and, when ``wanted`` is given, contains
    a match of it, without trailing lone words; None when there is none."""
    if _parses(text) and (wanted is None or wanted.search(text)):
        return _drop_lone_words(text.strip("\n"))
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)]
    ends = [len(lines)] + [i for i in range(len(lines) - 1, 0, -1) if lines[i][:1].strip()]
    targets = [i for i, line in enumerate(lines) if wanted.match(line)] if wanted is not None else []
    tries = 0
    for start in starts:
        # the region must hold a line that defines the wanted name: the last such line bounds both ends
        if wanted is not None and (not targets or targets[-1] < start):
            break
        first_target = next((t for t in targets if t >= start), start)
        for end in ends:
            if end <= max(start, first_target) or tries >= MAX_PARSE_TRIES:
                break
            tries += 1
            region = "\n".join(lines[start:end])
            if _parses(region):
                return _drop_lone_words(region)
    return None


def _choose_block(blocks: list[Fenced], wanted: re.Pattern[str] | None) -> str | None:
    code = [block.content for block in blocks if block.tag in PYTHON_TAGS]
    if not code:
        return None
    predicates = ([wanted.search] if wanted else []) + [_ANY_DEFINITION.search]
    for predicate in predicates:
        for block in reversed(code):
            if predicate(block):
                return block
    return code[-1]


def extract_code(text: str, defines: str | None = None) -> str:
    """The code of a reply (rules 1-5): the chosen fenced block, or the text itself, cut to the
    region that parses when there is one. ``defines`` is the name the code must define (a
    function's entry point); the reply is never None: text with no code comes back stripped."""
    text = normalise_newlines(text)
    wanted = definition_pattern(defines) if defines else None
    block = _choose_block(fenced_blocks(text), wanted)
    source = block if block is not None else text
    region = parseable_region(source, wanted)
    return region if region is not None else source.strip("\n")


def extract_workflow(completion: str) -> str | None:
    """The ``class Workflow`` source in a generator completion (rules 1-5, starting at the class
    line, usage lines after the class removed), or None when the completion holds no ``class
    Workflow``. A completion of a prompt that ended on ``<graph>`` has only the closing tag."""
    text = normalise_newlines(completion)
    graph = _GRAPH.search(text)
    if graph:
        text = graph.group(1)
    elif GRAPH_CLOSE in text:
        text = text[: text.index(GRAPH_CLOSE)]
    wanted = definition_pattern("Workflow")
    block = _choose_block(fenced_blocks(text), wanted)
    source = block if block is not None and wanted.search(block) else text
    found = wanted.search(source)
    if found is None:
        return None
    tail = source[found.start() :].lstrip(" \t")
    region = parseable_region(tail, wanted)
    return _without_usage_lines(region) if region is not None else tail.strip("\n")


def _without_usage_lines(source: str) -> str:
    """The source up to the end of ``class Workflow`` plus later constant assignments: what models
    write after the class to show its use (``workflow = Workflow(llm, problem)``, ``if __name__ ==
    "__main__":``, ``asyncio.run(...)``) is not part of the workflow."""
    tree = ast.parse(source)
    lines = source.split("\n")
    classes = [i for i, node in enumerate(tree.body) if isinstance(node, ast.ClassDef) and node.name == "Workflow"]
    if not classes:
        return source
    kept = lines[: tree.body[classes[0]].end_lineno]
    for node in tree.body[classes[0] + 1 :]:
        constant = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.JoinedStr)
        if constant or (isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)):
            kept += lines[node.lineno - 1 : node.end_lineno]
    return "\n".join(kept).strip("\n")
