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
   top-level line (or a line dedented to a depth no open block has, which Python refuses) that
   starts a statement (not a line inside a string, brackets or after a backslash), so
   prose before and after the code goes but a truncated definition is never shortened into a
   valid one. Text in which no region parses is returned as it is (a body-only
   completion, indented, stays whole).

`extract_code` serves the graders (harness/benchmarks/humaneval.py, mbpp.py, the Test and Programmer
operators) and `extract_workflow` the generator's completions: both are this one function.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
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


_BLANK_LINES_AT_START = re.compile(r"\A(?:[ \t]*\n)+")


def trim_blank_lines(text: str) -> str:
    """``text`` without its blank lines (empty or spaces only) at either end and the trailing spaces
    of its last line; the first line keeps its indentation (a body-only completion is indented)."""
    return _BLANK_LINES_AT_START.sub("", text).rstrip()


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False
    return True


_WORD_CONSTANTS = (True, False, None, Ellipsis)
"""The constants a prose word can spell: 'True', 'False', 'None' and '...'."""
_WORD_COMPARISONS = (ast.Is, ast.IsNot, ast.In, ast.NotIn)


def _is_words(value: ast.expr) -> bool:
    """Whether ``value`` is spelled with words alone: names, dotted names ('e.g', 'A.A'), 'True',
    'False', 'None', '...', and the keywords that join words ('not', 'and', 'or', 'is', 'in',
    'if ... else'); commas make tuples of them. No operator, bracket, call or number."""
    if isinstance(value, ast.Attribute):
        return _is_words(value.value)
    if isinstance(value, ast.Constant):
        return any(value.value is word for word in _WORD_CONSTANTS)
    if isinstance(value, ast.Tuple):
        return bool(value.elts) and all(_is_words(element) for element in value.elts)
    if isinstance(value, ast.UnaryOp):
        return isinstance(value.op, ast.Not) and _is_words(value.operand)
    if isinstance(value, ast.BoolOp):
        return all(_is_words(operand) for operand in value.values)
    if isinstance(value, ast.Compare):
        words = all(isinstance(op, _WORD_COMPARISONS) for op in value.ops)
        return words and all(_is_words(operand) for operand in (value.left, *value.comparators))
    if isinstance(value, ast.IfExp):
        return all(_is_words(part) for part in (value.test, value.body, value.orelse))
    return isinstance(value, ast.Name)


def _is_prose(statement: ast.stmt) -> bool:
    """A top-level statement that is prose which happens to parse: words alone (`_is_words`:
    'Output', 'A.A', 'Yes, I', 'False', 'not A', 'A is B'), the word 'pass', or a name and a colon
    before anything ('Usage: total(xs)', 'e.g: O(n)': an annotation without a value). Run, it
    does nothing but evaluate names (or raise NameError); a bare annotation at the top level only
    records itself in the module's ``__annotations__``."""
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.AnnAssign):
        return statement.value is None
    return isinstance(statement, ast.Expr) and _is_words(statement.value)


def _line_from(line: str, col_offset: int) -> str:
    """``line`` from an ast column (ast counts UTF-8 bytes, not characters)."""
    return line.encode()[col_offset:].decode()


def _line_before(line: str, col_offset: int) -> str:
    """``line`` up to an ast column (UTF-8 bytes)."""
    return line.encode()[:col_offset].decode()


def _drop_prose(source: str) -> str:
    """Remove leading and trailing top-level statements that are prose (`_is_prose`), such as
    'Output', 'A.A', 'False', 'not A' or 'Usage: total(xs)'; run, they would do nothing or raise
    NameError. A statement sharing a line with code through ';' is cut at its column, so the code
    on that line stays ('print(total([1])); pass' keeps the call)."""
    body = ast.parse(source).body  # callers pass code that parses
    lines = source.split("\n")
    first, last = 0, len(body)
    while last - first > 1 and _is_prose(body[last - 1]):
        last -= 1
    while last - first > 1 and _is_prose(body[first]):
        first += 1
    if last < len(body):
        dropped = body[last]
        lines = lines[: dropped.lineno]
        lines[-1] = _line_before(lines[-1], dropped.col_offset)
        # between two statements stand only blanks, ';', comments and line continuations
        lines = "\n".join(lines).rstrip(" \t\f\n;\\").split("\n")
    if first > 0:
        kept = body[first]
        decorators = getattr(kept, "decorator_list", [])
        if decorators:  # a top-level decorator opens its own line
            lines = lines[min(d.lineno for d in decorators) - 1 :]
        else:
            lines = lines[kept.lineno - 1 :]
            lines[0] = _line_from(lines[0], kept.col_offset)
    cut = trim_blank_lines("\n".join(lines))
    return cut if _parses(cut) else source  # never worse than the region that parsed


def _continuation_lines(text: str) -> set[int]:
    """Indexes of the lines of ``text`` that continue a statement: inside a string that spans
    lines, inside brackets, or after a backslash (Python's tokenizer; it reads up to where the text
    stops being Python: a truncated string or bracket, prose it refuses)."""
    out: set[int] = set()
    depth, previous, row = 0, None, 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            first_row, last_row = token.start[0], token.end[0]
            out.update(range(first_row, last_row))  # 1-based rows after the first: 0-based indexes
            starts_line = first_row != row
            row = last_row
            if starts_line and previous is not None and token.type not in (tokenize.NL, tokenize.ENDMARKER):
                logical = previous.type == tokenize.NEWLINE or (previous.type == tokenize.NL and depth == 0)
                if not logical:
                    out.add(first_row - 1)
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth = max(0, depth - 1)
            if token.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT):
                previous = token
    except (tokenize.TokenError, SyntaxError):  # the text stops being Python here: no more to learn
        pass
    return out


def _boundaries(lines: list[str], continuations: set[int]) -> list[bool]:
    """Per line, whether code can end just before it (rule 5): a line at the top level (its first
    character is not a space, a tab or a form feed: prose, a new statement, or a character such as
    U+00A0 that Python refuses), or an indented line that dedents to a depth no line since the last
    top-level one has (Python's IndentationError: prose such as ' ?' after a body). An indented line
    at a known depth is never a boundary, so a truncated definition is not shortened into a valid
    one. A blank line is never a boundary; a comment-only line changes no depth (Python ignores its
    indentation) and is a boundary only at the top level and where the next line of code is one (or
    there is none), so a comment at column 0 inside a body does not cut it. A line in
    ``continuations`` (`_continuation_lines`: inside a string, brackets, after a backslash) is none
    of these: it is never a boundary and changes no depth, so a prompt template written at column 0
    inside a method does not cut the class."""
    out: list[bool] = []
    comments: list[int] = []  # top-level comment lines since the last line of code
    depths: set[str] = set()
    previous = ""
    for index, line in enumerate(lines):
        if index in continuations:
            out.append(False)
            continue
        code = line.lstrip(" \t\f")
        depth = line[: len(line) - len(code)].rsplit("\f", 1)[-1]  # a form feed resets the column
        if not code or code.startswith("#"):  # Python ignores its indentation: the depths stay
            if code and not depth:
                comments.append(len(out))
            out.append(False)
            continue
        if not depth:
            depths = set()  # a top-level statement: the blocks opened before it are closed
        boundary = not depth or (len(depth) < len(previous) and depth not in depths)
        for i in comments:
            out[i] = boundary
        comments = []
        out.append(boundary)
        depths.add(depth)
        previous = depth
    for i in comments:
        out[i] = True
    return out


def parseable_region(text: str, wanted: re.Pattern[str] | None = None) -> str | None:
    """The longest region of ``text`` that parses (rule 5) and, when ``wanted`` is given, contains
    a match of it, without prose statements at its ends (`_drop_prose`); None when there is none."""
    if _parses(text) and (wanted is None or wanted.search(text)):
        stripped = text.strip("\n")  # a final backslash may need the blank line after it
        return _drop_prose(stripped if _parses(stripped) else text)
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)]
    if not starts:
        return None
    # continuations from the first line of code on: prose before it (an unclosed '(') would mislead
    continuations = {starts[0] + i for i in _continuation_lines("\n".join(lines[starts[0] :]))}
    boundaries = _boundaries(lines, continuations)
    ends = [len(lines)] + [i for i in range(len(lines) - 1, 0, -1) if boundaries[i]]
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
                return _drop_prose(region)
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
    return region if region is not None else trim_blank_lines(source)


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
    return _without_usage_lines(region) if region is not None else trim_blank_lines(tail)


def _without_usage_lines(source: str) -> str:
    """The source up to the end of ``class Workflow`` plus later constant assignments and
    definitions (with their decorators): what models write after the class to show its use
    (``workflow = Workflow(llm, problem)``, ``if __name__ == "__main__":``, ``asyncio.run(...)``) is
    not part of the workflow. Statements sharing a line through ';' are taken one by one."""
    tree = ast.parse(source)
    lines = source.split("\n")
    classes = [i for i, node in enumerate(tree.body) if isinstance(node, ast.ClassDef) and node.name == "Workflow"]
    if not classes:
        return source
    kept = lines[: tree.body[classes[0]].end_lineno]
    for node in tree.body[classes[0] + 1 :]:
        constant = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.JoinedStr)
        if constant:
            kept.append(ast.get_source_segment(source, node) or "")
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])  # a def opens its line
            kept += lines[first - 1 : node.end_lineno]
    return trim_blank_lines("\n".join(kept))
