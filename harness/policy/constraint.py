"""Grammar-constrained decoding: the generator may only write workflows of the operator grammar.

A `GrammarConstraint` holds, per domain, a token trie of every workflow that
`harness.workflows.grammar` can render (wrapped in `<graph>...</graph>` exactly as the tiny
generator's warm-up data is), tokenized by the generator's own tokenizer. While sampling, each row
walks its domain's trie and every token that would leave it gets logit -inf; at the end of a
workflow only end-of-sequence remains. The trainer applies the same mask in its teacher-forced
pass, so the policy it optimises is the distribution the sampler drew from (log_softmax over the
allowed tokens), the ratio starts at exactly 1 and the KL compares two distributions on the same
support. Positions with a single allowed token have log-prob 0 under every policy and carry no
gradient: the update acts only on the grammar's decisions (which generator, how many samples,
plain or step-by-step instruction, which checks).

Why it exists (docs/methods.md, "The learning check"): in workflow-as-code each operator
choice is written at two or three places (declared in `__init__`, called, its result used), and a
million-parameter model trained by RL loses the consistency between them faster than it learns
which operators score; the constraint separates that representation question from the learning
question. It is an option of every generator (`generator.decoding`), the default only for `tiny`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spogw.harness.policy.prompts import COMPLETION_CUE, DOMAINS, GRAPH_CLOSE, GRAPH_OPEN, prompt_domain

if TYPE_CHECKING:
    import torch


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
    terminal: bool = False
    """A complete workflow ends here (only end-of-sequence may follow)."""


POSITIONS_CACHE = 65_536
"""Completions whose allowed (position, token) pairs a constraint keeps (each a few hundred ints: the
grammar's workflows are short and their tries narrow)."""


class ConstraintViolation(ValueError):
    """A completion that the constraint could not have produced (e.g. collected without it)."""


class GrammarConstraint:
    """Token tries of the grammar's workflows, one per domain, for one tokenizer."""

    def __init__(self, tokenizer: Any, domains: Sequence[str] = DOMAINS) -> None:
        self.tokenizer = tokenizer
        self.eos_id: int = tokenizer.eos_token_id
        self.domains = tuple(domains)
        self.roots: dict[str, TrieNode] = {}
        """Per domain, the trie of completions that open with ``<graph>`` (compact prompts)."""
        self.cued_roots: dict[str, TrieNode] = {}
        """Per domain, the trie of completions after a prompt that ends on the cue ``<graph>\\n``
        (chat and full prompts): the workflow itself, then ``</graph>``. Built on first use."""
        self._positions: dict[tuple[int, tuple[int, ...]], tuple[list[int], list[int]]] = {}
        """`_allowed_positions` by (trie, completion), at most POSITIONS_CACHE entries."""
        self.workflows: dict[str, int] = {}
        """Distinct workflows per domain (AnswerGenerate takes no instruction, so two structures that
        differ only in instruction style render to the same code)."""
        for domain in domains:
            self.roots[domain], self.workflows[domain] = self._trie(domain, f"{GRAPH_OPEN}\n")

    def _trie(self, domain: str, opening: str) -> tuple[TrieNode, int]:
        from spogw.harness.workflows.grammar import all_structures, render

        root = TrieNode()
        completions = {f"{opening}{render(s)}{GRAPH_CLOSE}" for s in all_structures(domain)}
        for completion in sorted(completions):
            node = root
            for token in self.tokenizer(completion, add_special_tokens=False)["input_ids"]:
                node = node.children.setdefault(token, TrieNode())
            node.terminal = True
        return root, len(completions)

    def root(self, prompt: str) -> TrieNode:
        """The trie the completion of ``prompt`` walks (its domain's, cued or not)."""
        domain = prompt_domain(prompt)
        if domain not in self.roots:
            raise ConstraintViolation(f"grammar constraint: no trie for domain {domain!r}")
        if not prompt.endswith(COMPLETION_CUE):
            return self.roots[domain]
        if domain not in self.cued_roots:
            self.cued_roots[domain] = self._trie(domain, "")[0]
        return self.cued_roots[domain]

    def allowed(self, node: TrieNode) -> list[int]:
        """Token ids that may follow at ``node``."""
        allowed = list(node.children)
        if node.terminal:
            allowed.append(self.eos_id)
        return allowed

    @staticmethod
    def advance(node: TrieNode | None, token: int) -> TrieNode | None:
        """The node after ``token`` (None once the completion has left the trie or ended)."""
        return None if node is None else node.children.get(token)

    def allowed_mask(self, prompt: str, completion_ids: Sequence[int], vocab_size: int) -> torch.Tensor:
        """(T, V) bool: which tokens were allowed at each of the completion's T positions.

        Raises ConstraintViolation if the completion leaves the trie: its log-prob under the
        constrained policy would be -inf (a rollout collected without the constraint)."""
        import torch

        rows, columns = self._allowed_positions(self.root(prompt), tuple(completion_ids))
        mask = torch.zeros((len(completion_ids), vocab_size), dtype=torch.bool)
        mask[rows, columns] = True
        return mask

    def _allowed_positions(self, root: TrieNode, completion_ids: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """The (position, token) pairs of `allowed_mask`, cached per (trie, completion): the trainer
        asks for the same completions every epoch, and one indexed write beats one per position."""
        key = (id(root), completion_ids)  # the roots live as long as the constraint: an id is never reused
        found = self._positions.get(key)
        if found is not None:
            return found
        rows: list[int] = []
        columns: list[int] = []
        node: TrieNode | None = root
        for position, token in enumerate(completion_ids):
            if node is None:
                raise ConstraintViolation(f"grammar constraint: token {position} comes after the end of the workflow")
            allowed = self.allowed(node)
            if token not in allowed:
                raise ConstraintViolation(
                    f"grammar constraint: token {position} (id {token}) is not allowed there; was this completion "
                    "sampled with generator.decoding 'free'?"
                )
            rows += [position] * len(allowed)
            columns += allowed
            node = self.advance(node, token)
        if len(self._positions) >= POSITIONS_CACHE:
            self._positions.pop(next(iter(self._positions)))  # the oldest entry
        self._positions[key] = (rows, columns)
        return rows, columns

    def decisions(self, domain: str) -> int:
        """Number of trie nodes with more than one way on (a measure of how many choices remain)."""
        stack, count = [self.roots[domain]], 0
        while stack:
            node = stack.pop()
            count += len(node.children) + node.terminal > 1
            stack.extend(node.children.values())
        return count


def masked_log_softmax(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """log_softmax over the allowed tokens only. logits (..., V), allowed (..., V) bool or None."""
    import torch

    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    return torch.log_softmax(logits, dim=-1)
