"""Pull the workflow code out of a generator completion.

ScoreFlow's generators write the workflow inside <graph>...</graph>; chat models often wrap code
in a ```python fence (sometimes inside the tags). The first that applies wins; a completion with
neither but with a `class Workflow` is taken whole from that line on.
"""

from __future__ import annotations

import re

_GRAPH = re.compile(r"<graph>(.*?)(?:</graph>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_workflow(completion: str) -> str | None:
    """The workflow source in ``completion``, or None when there is none."""
    text = completion
    graph = _GRAPH.search(text)
    if graph:
        text = graph.group(1)
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(1)
    start = text.find("class Workflow")
    if start < 0:
        return None
    return text[start:].strip("\n")
