"""What the generator reads: a ScoreFlow-style instruction per domain plus the question.

Templates live in harness/policy/templates/<domain>.v<N>.txt; the version is part of the template
name so a changed prompt is a new, named thing (it is recorded with every run). The `compact` style
is for generators trained from scratch (the `tiny` preset): the instruction is constant per domain
and carries nothing a randomly initialised model could read, so it is replaced by a domain tag.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_VERSION = "v1"
DOMAINS = ("math", "code", "qa")
PromptStyle = Literal["full", "compact"]
GRAPH_OPEN, GRAPH_CLOSE = "<graph>", "</graph>"


@cache
def template(domain: str, version: str = TEMPLATE_VERSION) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"no prompt template for domain {domain!r}; domains: {', '.join(DOMAINS)}")
    path = TEMPLATE_DIR / f"{domain}.{version}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    return path.read_text()


def build_prompt(domain: str, question: str, style: PromptStyle = "full", version: str = TEMPLATE_VERSION) -> str:
    """The generator's input for one question."""
    if style == "compact":
        return f"<|{domain}|>\n{question.strip()}\n"
    return template(domain, version).replace("{question}", question.strip())


def prompt_domain(prompt: str, version: str = TEMPLATE_VERSION) -> str:
    """The domain a prompt built by `build_prompt` was built for (compact tag or full template)."""
    for domain in DOMAINS:
        if prompt.startswith(f"<|{domain}|>\n"):
            return domain
        head = template(domain, version).split("{question}")[0]
        if head and prompt.startswith(head):
            return domain
    raise ValueError(f"cannot tell the domain of a prompt that starts {prompt[:60]!r}: not built by build_prompt")


def template_id(style: PromptStyle, version: str = TEMPLATE_VERSION) -> str:
    """Identity of the prompt format, recorded with every run."""
    return f"{style}-{version}" if style == "full" else "compact-v1"
