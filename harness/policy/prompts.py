"""What the generator reads: a ScoreFlow-style instruction per domain plus the question.

Templates live in harness/policy/templates/<domain>.v<N>.txt; the version is part of the template
name so a changed prompt is a new, named thing (it is recorded with every run). v2 says what code
is allowed (asyncio.gather, str.format, helper methods) and that the answer must come from an
operator; v1 is kept for runs that recorded it.

Three styles:
- ``chat`` (instruct models: the tokenizer has a chat template): the instruction is the user turn,
  wrapped by the model's own chat template with the assistant turn opened, then the completion
  cue ``<graph>\\n``, so the model starts writing the workflow at once;
- ``full`` (base models): the instruction, then the same cue on a line of its own;
- ``compact`` (generators trained from scratch, the ``tiny`` preset): the instruction is constant
  per domain and carries nothing a randomly initialised model could read, so it is replaced by a
  domain tag, and there is no cue (the tiny model writes ``<graph>`` itself).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_VERSION = "v2"
DOMAINS = ("math", "code", "qa")
PromptStyle = Literal["full", "compact", "chat"]
GRAPH_OPEN, GRAPH_CLOSE = "<graph>", "</graph>"
COMPLETION_CUE = f"{GRAPH_OPEN}\n"
"""Where the chat and full prompts end: the completion starts inside the graph tags."""


@cache
def template(domain: str, version: str = TEMPLATE_VERSION) -> str:
    """The instruction template of ``domain`` at ``version``. Raises ValueError for an unknown
    domain, FileNotFoundError for a version that has no file."""
    if domain not in DOMAINS:
        raise ValueError(f"no prompt template for domain {domain!r}; domains: {', '.join(DOMAINS)}")
    path = TEMPLATE_DIR / f"{domain}.{version}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {path} does not exist")
    return path.read_text()


def build_prompt(
    domain: str, question: str, style: PromptStyle = "full", version: str = TEMPLATE_VERSION, tokenizer: Any = None
) -> str:
    """The generator's input for one question; ``chat`` needs the ``tokenizer`` whose chat
    template wraps the instruction (ValueError without one)."""
    if style == "compact":
        return f"<|{domain}|>\n{question.strip()}\n"
    instruction = template(domain, version).replace("{question}", question.strip())
    if style == "full":
        return f"{instruction.rstrip()}\n\n{COMPLETION_CUE}"
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt style 'chat' needs a tokenizer with a chat template")
    messages = [{"role": "user", "content": instruction.rstrip()}]
    opened = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{opened}{COMPLETION_CUE}"


def prompt_domain(prompt: str, version: str = TEMPLATE_VERSION) -> str:
    """The domain a prompt built by `build_prompt` was built for (compact tag, or the template's
    opening words anywhere in it: a chat template puts them after its own header)."""
    for domain in DOMAINS:
        if prompt.startswith(f"<|{domain}|>\n"):
            return domain
    for candidate in dict.fromkeys((version, TEMPLATE_VERSION, "v1")):
        for domain in DOMAINS:
            head = template(domain, candidate).split("{question}")[0]
            if head and head.rstrip() in prompt:
                return domain
    raise ValueError(f"cannot tell the domain of a prompt that starts {prompt[:60]!r}: not built by build_prompt")


def template_id(style: PromptStyle, version: str = TEMPLATE_VERSION) -> str:
    """Identity of the prompt format, recorded with every run."""
    return "compact-v1" if style == "compact" else f"{style}-{version}"
