"""Static checks and the run-time rewrite of generated workflow code.

Longer than 400 lines because the whole allow-list of untrusted workflow code is kept in one file,
so that a security review reads one module.

A generated workflow is untrusted. It must be one ``class Workflow`` with ``__init__(self, llm,
problem)`` and ``async def run_workflow(self)`` (or AFlow/ScoreFlow's ``async def __call__(self)``
or ``__call__(self, problem)``, run the same way), written in a small subset of Python: operator
calls (several at once with ``asyncio.gather``), plain control flow, literals, f-strings,
``"...{}".format(...)`` on a literal and a few safe builtins and methods. Header lines real models
write (``import operator``, ``import asyncio``, ``from typing import List``) are accepted and
dropped: the worker provides those names. This module
rejects anything else with a reason (no imports, no dunder or private names, no open/exec/eval/
getattr/globals, no attribute other than ``self.x``, ``operator.X`` or an allowlisted method,
no ``while True`` without a break) and rewrites what it accepts so that loops, calls and
arithmetic are bounded at run time (every loop body and function entry ticks a step budget;
``+ * ** <<`` go through a size-checking guard).

The checks here are the first wall; the second is the isolated worker process the code runs in
(no network, read-only file system, address-space and CPU limits: see pool.py). Stdlib only.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

OPERATOR_NAMES = frozenset(
    {
        "Custom",
        "AnswerGenerate",
        "CustomCodeGenerate",
        "ScEnsemble",
        "Programmer",
        "Test",
        "Review",
        "Revise",
        "Format",
    }
)

# Builtins the workflow may call; the worker gives it these and nothing else.
SAFE_BUILTIN_NAMES = frozenset(
    {
        "len", "range", "min", "max", "sum", "sorted", "reversed", "enumerate", "zip", "any", "all",
        "abs", "round", "str", "int", "float", "bool", "list", "dict", "set", "tuple", "isinstance",
        "print", "Exception", "ValueError", "KeyError", "IndexError", "TypeError", "RuntimeError",
        "True", "False", "None",
    }
)  # fmt: skip

# Methods callable on values (strings, lists, dicts, operator results). No format/format_map:
# str.format reaches attributes through the format string ("{0.__class__}").
SAFE_METHODS = frozenset(
    {
        "append", "extend", "insert", "pop", "index", "count", "copy", "get", "items", "keys",
        "values", "update", "setdefault", "join", "split", "rsplit", "splitlines", "strip", "lstrip",
        "rstrip", "lower", "upper", "title", "capitalize", "replace", "startswith", "endswith",
        "find", "rfind", "isdigit", "isalpha", "isnumeric", "isspace", "sort", "reverse", "remove",
        "clear", "partition", "rpartition",
    }
)  # fmt: skip

# Named in a rejection even though the worker would not provide them anyway: a clear reason
# beats a NameError at run time.
FORBIDDEN_NAMES = frozenset(
    {
        "open", "exec", "eval", "compile", "getattr", "setattr", "delattr", "hasattr", "globals",
        "locals", "vars", "dir", "type", "object", "super", "input", "breakpoint", "memoryview",
        "classmethod", "staticmethod", "property", "help", "exit", "quit", "id", "hash", "iter",
        "next", "callable", "bytes", "bytearray", "frozenset", "format", "chr", "ord", "ascii",
        "repr", "issubclass", "os", "sys", "subprocess", "socket", "importlib", "builtins", "asyncio",
    }
)  # fmt: skip

_STATEMENTS = (
    ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return, ast.If, ast.For, ast.While,
    ast.Break, ast.Continue, ast.Pass, ast.Try, ast.Raise, ast.Assert, ast.ExceptHandler,
)  # fmt: skip
_EXPRESSIONS = (
    ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.Call, ast.Await, ast.BinOp,
    ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.List, ast.Tuple, ast.Dict, ast.Set,
    ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp, ast.comprehension, ast.JoinedStr,
    ast.FormattedValue, ast.Starred, ast.keyword, ast.NamedExpr,
)  # fmt: skip
_CONTEXT = (
    ast.Load, ast.Store, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context,
    ast.arguments, ast.arg,
)  # fmt: skip

HEADER_IMPORTS = frozenset({"operator", "asyncio", "typing"})
"""Modules a model may import at the top of a workflow: dropped, since the worker provides
``operator`` and ``asyncio.gather`` itself and typing names are annotations only."""
ENTRY_ALIASES = ("__call__",)
"""AFlow and ScoreFlow write the entry point as ``async def __call__``: run as run_workflow."""

MAX_SOURCE_CHARS = 40_000
MAX_CONSTANT_CHARS = 20_000
MAX_AST_NODES = 5_000
_FORMAT_SPEC = re.compile(r"(\.\d{1,2})?[dfegs%]?")


class WorkflowInvalid(ValueError):
    """Generated code that may not run; the message is the reason shown to the user."""


@dataclass(frozen=True)
class ValidatedWorkflow:
    """Code that passed validation: the source as given and the guarded source the worker runs."""

    source: str
    guarded_source: str
    operators: tuple[str, ...]
    """Operator classes the code constructs, in order of appearance (its 'structure')."""


def _reject(node: ast.AST | None, reason: str) -> WorkflowInvalid:
    line = getattr(node, "lineno", None)
    return WorkflowInvalid(f"line {line}: {reason}" if line else reason)


def _is_private(name: str) -> bool:
    # A lone "_" is the usual throwaway loop variable; every guard name is longer.
    return name.startswith("_") and name != "_"


class _Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.operators: list[str] = []

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _STATEMENTS + _EXPRESSIONS + _CONTEXT):
            raise _reject(node, f"{type(node).__name__} is not allowed in a workflow")
        super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if _is_private(node.id):
            raise _reject(node, f"name {node.id!r}: private and dunder names are not allowed")
        if node.id in FORBIDDEN_NAMES:
            raise _reject(node, f"name {node.id!r} is not allowed in a workflow")

    def visit_arg(self, node: ast.arg) -> None:
        if _is_private(node.arg):
            raise _reject(node, f"argument {node.arg!r}: private and dunder names are not allowed")
        if node.annotation is not None:
            self.visit(node.annotation)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "asyncio":
            if node.attr != "gather":
                raise _reject(node, f"asyncio.{node.attr} is not allowed (only asyncio.gather)")
            return
        if node.attr == "format" and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            _check_format_string(node, node.value.value)
            return
        self.visit(node.value)  # inner offences first: `open(p).read` is about open, not read
        attr = node.attr
        if _is_private(attr):
            raise _reject(node, f"attribute {attr!r}: private and dunder attributes are not allowed")
        base = node.value
        if isinstance(base, ast.Name) and base.id == "self":
            pass
        elif isinstance(base, ast.Name) and base.id == "operator":
            if attr not in OPERATOR_NAMES:
                raise _reject(node, f"operator.{attr} is not an operator ({', '.join(sorted(OPERATOR_NAMES))})")
            self.operators.append(attr)
        elif attr not in SAFE_METHODS:
            raise _reject(node, f"attribute {attr!r} is not allowed (only self.x, operator.X and safe methods)")

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, str | bytes) and len(value) > MAX_CONSTANT_CHARS:
            raise _reject(node, f"a literal of {len(value)} characters (limit {MAX_CONSTANT_CHARS})")
        if isinstance(value, bytes):
            raise _reject(node, "bytes literals are not allowed")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
            raise _reject(node, "integer literal too large")

    def visit_FormattedValue(self, node: ast.FormattedValue) -> None:
        spec = node.format_spec
        if spec is not None:
            # A literal precision/type only (".2f", "d"): a width or a nested expression could
            # ask for a string of any size.
            text = "".join(str(v.value) for v in spec.values if isinstance(v, ast.Constant))  # type: ignore[attr-defined]
            literal = isinstance(spec, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in spec.values)
            if not literal or not _FORMAT_SPEC.fullmatch(text):
                raise _reject(node, "f-string format specs are limited to a precision and type (e.g. '.2f')")
        self.visit(node.value)

    def visit_While(self, node: ast.While) -> None:
        if isinstance(node.test, ast.Constant) and node.test.value and not _has_break(node):
            raise _reject(node, "`while True` without a break never ends")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            if keyword.arg is None:
                raise _reject(node, "**kwargs in a call is not allowed")
        self.generic_visit(node)

    def visit_Await(self, node: ast.Await) -> None:
        if not isinstance(node.value, ast.Call):
            raise _reject(node, "await only an operator call")
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        for handler in node.handlers:
            if handler.name is not None and _is_private(handler.name):
                raise _reject(handler, f"name {handler.name!r}: private names are not allowed")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        for statement in node.body:
            self.visit(statement)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        if node.is_async:
            raise _reject(node.iter, "async comprehensions are not allowed")
        self.generic_visit(node)


def _check_format_string(node: ast.AST, template: str) -> None:
    """``template.format(...)`` is safe when its fields are plain (``{}``, ``{0}``, ``{name}``): no
    attribute or index access (``{0.__class__}``) and no spec beyond a precision and type."""
    import string

    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as err:
        raise _reject(node, f"bad format string: {err}") from None
    for _, name, spec, _ in fields:
        if name is None:
            continue
        if name and not (name.isdigit() or name.isidentifier()):
            raise _reject(
                node, f"attribute 'format' is not allowed with the field {{{name}}} (only {{}}, {{0}} or {{name}})"
            )
        if spec and not _FORMAT_SPEC.fullmatch(spec):
            raise _reject(node, "format specs are limited to a precision and type (e.g. '.2f')")


def _is_header_import(node: ast.stmt) -> bool:
    """``import operator``, ``import asyncio``, ``from typing import List`` and the like."""
    if isinstance(node, ast.Import):
        return all(
            alias.name.split(".")[0] in HEADER_IMPORTS and alias.asname in (None, alias.name) for alias in node.names
        )
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").split(".")[0] in HEADER_IMPORTS
    return False


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def _has_break(loop: ast.While) -> bool:
    return any(isinstance(node, ast.Break | ast.Return) for node in ast.walk(loop))


def _check_class(cls: ast.ClassDef, checker: _Checker) -> None:
    if cls.bases or cls.keywords or cls.decorator_list:
        raise _reject(cls, "class Workflow takes no base classes, keywords or decorators")
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for item in cls.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            if item.decorator_list:
                raise _reject(item, "decorators are not allowed")
            if item.name not in ("__init__", *ENTRY_ALIASES) and _is_private(item.name):
                raise _reject(item, f"method {item.name!r}: private and dunder names are not allowed")
            if item.name in methods:
                raise _reject(item, f"method {item.name!r} is defined twice")
            methods[item.name] = item
            _check_function(item, checker)
        elif _is_docstring(item) or isinstance(item, ast.Assign | ast.AnnAssign | ast.Pass):
            checker.visit(item)
        else:
            raise _reject(item, f"{type(item).__name__} is not allowed in the Workflow class body")
    init = methods.get("__init__")
    if not isinstance(init, ast.FunctionDef):
        raise _reject(cls, "Workflow needs `def __init__(self, llm, problem)`")
    if [a.arg for a in init.args.args] != ["self", "llm", "problem"]:
        raise _reject(init, "__init__ must take exactly (self, llm, problem)")
    run = methods.get("run_workflow")
    alias = next((methods[name] for name in ENTRY_ALIASES if name in methods), None)
    if run is None and alias is not None:
        if not isinstance(alias, ast.AsyncFunctionDef) or [a.arg for a in alias.args.args] not in (
            ["self"],
            ["self", "problem"],
        ):
            raise _reject(alias, "__call__ must be `async def __call__(self)` or `async def __call__(self, problem)`")
        return
    if not isinstance(run, ast.AsyncFunctionDef):
        raise _reject(cls, "Workflow needs `async def run_workflow(self)`")
    if [a.arg for a in run.args.args] != ["self"]:
        raise _reject(run, "run_workflow must take only self")
    if alias is not None:
        raise _reject(alias, "define run_workflow or __call__, not both")


def _check_function(func: ast.FunctionDef | ast.AsyncFunctionDef, checker: _Checker) -> None:
    args = func.args
    if args.vararg or args.kwarg or args.posonlyargs or args.kwonlyargs:
        raise _reject(func, "*args, **kwargs and keyword-only arguments are not allowed")
    if not args.args or args.args[0].arg != "self":
        raise _reject(func, f"method {func.name!r} must take self first")
    for arg in args.args:
        checker.visit(arg)
    for default in args.defaults:
        checker.visit(default)
    if func.returns is not None:
        checker.visit(func.returns)
    for statement in func.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            raise _reject(statement, "nested functions and classes are not allowed")
        checker.visit(statement)


def check(source: str) -> ast.Module:
    """Parse and check ``source``; return its AST or raise WorkflowInvalid with the reason."""
    if not isinstance(source, str) or not source.strip():
        raise WorkflowInvalid("empty workflow")
    if len(source) > MAX_SOURCE_CHARS:
        raise WorkflowInvalid(f"workflow of {len(source)} characters (limit {MAX_SOURCE_CHARS})")
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as err:
        raise WorkflowInvalid(f"line {err.lineno}: syntax error: {err.msg}") from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise WorkflowInvalid(f"cannot parse: {type(err).__name__}") from None
    node_count = sum(1 for _ in ast.walk(tree))
    if node_count > MAX_AST_NODES:
        raise WorkflowInvalid(f"workflow of {node_count} syntax nodes (limit {MAX_AST_NODES})")
    checker = _Checker()
    classes = []
    for statement in tree.body:
        if isinstance(statement, ast.ClassDef):
            if statement.name != "Workflow":
                raise _reject(statement, f"only class Workflow may be defined, found {statement.name!r}")
            classes.append(statement)
        elif _is_docstring(statement) or _is_header_import(statement):
            continue
        elif isinstance(statement, ast.Import | ast.ImportFrom):
            names = ", ".join(alias.name for alias in statement.names)
            module = getattr(statement, "module", None)
            raise _reject(
                statement,
                f"Import is not allowed: {module or names} (only operator, asyncio and typing, which are dropped)",
            )
        elif isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets):
            checker.visit(statement)  # module-level constants such as prompt strings
        else:
            raise _reject(statement, f"{type(statement).__name__} is not allowed at module level")
    if len(classes) != 1:
        raise WorkflowInvalid("no class Workflow found" if not classes else "class Workflow is defined twice")
    _check_class(classes[0], checker)
    tree.operators = tuple(checker.operators)  # type: ignore[attr-defined]
    return tree


# ----------------------------------------------------------------------------------------------
# Run-time guards: the rewrite inserts calls to names that user code cannot spell (they start
# with an underscore, which the checker rejects), so the code cannot bypass or replace them.

TICK = "_guard_tick"
BOUNDED = "_guard_bounded"
BINOP = "_guard_binop"

_GUARDED_OPS = {ast.Add: "+", ast.Mult: "*", ast.Pow: "**", ast.LShift: "<<", ast.Mod: "%"}


class _Guard(ast.NodeTransformer):
    def _tick(self) -> ast.Expr:
        return ast.Expr(ast.Call(ast.Name(TICK, ast.Load()), [], []))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        """Function entries (and, below, while-loop bodies) start with a tick of the step budget."""
        self.generic_visit(node)
        node.body.insert(0, self._tick())
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]
    visit_While = visit_FunctionDef  # type: ignore[assignment]  # a loop body ticks like a function entry

    def visit_For(self, node: ast.For) -> ast.AST:
        self.generic_visit(node)
        node.iter = ast.Call(ast.Name(BOUNDED, ast.Load()), [node.iter], [])
        return node

    visit_comprehension = visit_For  # type: ignore[assignment]  # both iterate a bounded `iter`

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        symbol = _GUARDED_OPS.get(type(node.op))
        if symbol is None:
            return node
        return ast.Call(ast.Name(BINOP, ast.Load()), [ast.Constant(symbol), node.left, node.right], [])

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        symbol = _GUARDED_OPS.get(type(node.op))
        if symbol is None:
            return node
        load_target = _as_load(node.target)
        value = ast.Call(ast.Name(BINOP, ast.Load()), [ast.Constant(symbol), load_target, node.value], [])
        return ast.Assign(targets=[node.target], value=value)


def _as_load(target: ast.expr) -> ast.expr:
    clone = ast.parse(ast.unparse(target), mode="eval").body
    return clone


def _normalise_entry(tree: ast.Module) -> None:
    """Drop the header imports and name the entry point run_workflow (``__call__`` aliases it)."""
    tree.body = [statement for statement in tree.body if not _is_header_import(statement)]
    for statement in tree.body:
        if isinstance(statement, ast.ClassDef):
            for item in statement.body:
                if isinstance(item, ast.AsyncFunctionDef) and item.name in ENTRY_ALIASES:
                    item.name = "run_workflow"


def validate_workflow(source: str) -> ValidatedWorkflow:
    """Check ``source`` and produce the guarded source the worker runs. Raises WorkflowInvalid."""
    tree = check(source)
    operators = tree.operators  # type: ignore[attr-defined]
    _normalise_entry(tree)
    guarded = ast.fix_missing_locations(_Guard().visit(tree))
    return ValidatedWorkflow(source=source, guarded_source=ast.unparse(guarded), operators=operators)
