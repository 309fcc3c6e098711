"""qa_synth: HotpotQA-style questions over given passages, from the harness's own seeded generator.

No download: every item is a small invented world of three passages (those that answer the
question and distractors about other people, films, books or companies, as in HotpotQA's
distractor setting), generated with a fixed seed so every machine gets the same benchmark. Scoring is
HotpotQA's official answer F1 (harness.benchmarks.scoring.hotpotqa_f1).

Two kinds of question, told apart by their wording:

- ``single_hop``: the answer is stated in one passage ("In which city was Ines Moreau born?");
- ``bridge``: the answer needs a second passage about an entity the first one names ("In which
  city was the director of the film Quiet Harbour born?"), HotpotQA's bridge questions.

The question comes before the passages, so a generator that reads only the start of the prompt
still sees the kind. Each item carries what the simulated executor needs: a difficulty (bridge
questions are harder), the kind, and the wrong answers a model tends to give, most likely first
(for a bridge question the intermediate entity, the classic shortcut; then the distractor
passages' answers).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from spogw.harness.benchmarks.base import Benchmark, Item, SimTraits, seeded_rng
from spogw.harness.benchmarks.data import DEFAULT_SOURCE, Source, generated_benchmark
from spogw.harness.benchmarks.qa import score_hotpotqa

FIRST = ("Ines", "Tomas", "Mira", "Jonas", "Leila", "Oskar", "Priya", "Mateo", "Yuki", "Anton", "Selma", "Rafael")
LAST = ("Moreau", "Lindqvist", "Okafor", "Varga", "Castellanos", "Brandt", "Nakamura", "Hale", "Petrov", "Duarte")
CITIES = (
    "Lisbon", "Tampere", "Valparaiso", "Ghent", "Kraków", "Porto", "Graz", "Bergen", "Trieste", "Utrecht",
    "Cork", "Bilbao", "Brno", "Aarhus", "Lyon", "Turku",
)  # fmt: skip
TITLE_WORDS = ("Quiet", "Harbour", "Silver", "Winter", "Paper", "Lantern", "Northern", "Garden", "Iron", "Tide")
COMPANY_WORDS = ("Arcwell", "Brightline", "Corvid", "Dunmore", "Elmstead", "Fernway", "Glasswork", "Halcyon")


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    passages: tuple[tuple[str, str], ...]
    """(title, text), the question's own and the distractors, in the order shown."""
    wrong: tuple[str, ...]
    """Plausible wrong answers, most likely first."""
    kind: str


def _person(r: random.Random, taken: set[str]) -> str:
    while True:
        name = f"{r.choice(FIRST)} {r.choice(LAST)}"
        if name not in taken:
            taken.add(name)
            return name


def _title(r: random.Random) -> str:
    return " ".join(r.sample(TITLE_WORDS, 2))


def _world(r: random.Random) -> tuple[list[str], list[str], str, str, str]:
    """Three distinct people, three distinct cities, a film, a book and a company."""
    taken: set[str] = set()
    people = [_person(r, taken) for _ in range(3)]
    cities = r.sample(CITIES, 3)
    film, book = _title(r), _title(r)
    company = f"{r.choice(COMPANY_WORDS)} {r.choice(('Labs', 'Works', 'Group', 'Systems'))}"
    return people, cities, film, book, company


def _born(person: str, city: str, role: str) -> tuple[str, str]:
    article = "an" if role[0] in "aeiou" else "a"
    return person, f"{person} is {article} {role} born in {city}, where {person.split()[0]} also studied."


def _birthplace(r: random.Random) -> Question:
    (person, other, third), (city, other_city, third_city), film, _, _ = _world(r)
    passages = [
        _born(person, city, "painter"),
        _born(other, other_city, "painter"),
        (film, f"{film} is a drama film directed by {third}, shot in {third_city}."),
    ]
    r.shuffle(passages)
    return Question(f"In which city was {person} born?", city, tuple(passages), (other_city, third_city), "single_hop")


def _headquarters(r: random.Random) -> Question:
    (founder, other, _), (city, other_city, third_city), _, _, company = _world(r)
    passages = [
        (company, f"{company} is a software company founded by {founder} and based in {city}."),
        _born(founder, third_city, "engineer"),
        (f"{other} Studio", f"{other} runs a design studio based in {other_city}."),
    ]
    r.shuffle(passages)
    return Question(f"In which city is {company} based?", city, tuple(passages), (third_city, other_city), "single_hop")


def _director(r: random.Random) -> Question:
    (director, other, _), (city, other_city, _), film, book, _ = _world(r)
    passages = [
        (film, f"{film} is a drama film directed by {director}, shot in {city}."),
        (book, f"{book} is a novel by {other}, set in {other_city}."),
        _born(other, city, "novelist"),
    ]
    r.shuffle(passages)
    return Question(f"Who directed the film {film}?", director, tuple(passages), (other, city), "single_hop")


def _creator_birthplace(r: random.Random, film: bool) -> Question:
    """Bridge: the birthplace of a film's director (``film``) or of a novel's author."""
    (creator, other, _), (city, other_city, place), film_title, book_title, _ = _world(r)
    title, role = (film_title, "film director") if film else (book_title, "novelist")
    work = (
        f"{title} is a drama film directed by {creator}, shot in {place}."
        if film
        else f"{title} is a novel by {creator}, set in {place}."
    )
    passages = [(title, work), _born(creator, city, role), _born(other, other_city, role)]
    r.shuffle(passages)
    asked = f"the director of the film {title}" if film else f"the author of the novel {title}"
    return Question(f"In which city was {asked} born?", city, tuple(passages), (creator, place, other_city), "bridge")


def _director_birthplace(r: random.Random) -> Question:
    return _creator_birthplace(r, film=True)


def _author_birthplace(r: random.Random) -> Question:
    return _creator_birthplace(r, film=False)


def _founder_company_city(r: random.Random) -> Question:
    (founder, other, _), (city, other_city, birth), _, _, company = _world(r)
    passages = [
        (company, f"{company} is a software company founded by {founder} and based in {city}."),
        _born(founder, birth, "engineer"),
        (f"{other} Studio", f"{other} runs a design studio based in {other_city}."),
    ]
    r.shuffle(passages)
    return Question(
        f"In which city is the company founded by {founder} based?",
        city,
        tuple(passages),
        (company, birth, other_city),
        "bridge",
    )


Template = Callable[[random.Random], Question]
TEMPLATES: tuple[Template, ...] = (
    _birthplace,
    _director_birthplace,
    _headquarters,
    _author_birthplace,
    _director,
    _founder_company_city,
)
"""Alternating single-hop and bridge templates: half the items of each kind."""

_BASE_DIFFICULTY = {"single_hop": -0.8, "bridge": 0.6}


def _traits(question: Question, item_id: str) -> SimTraits:
    noise = seeded_rng("qa-difficulty", item_id).gauss(0.0, 0.8)
    return SimTraits(
        difficulty=round(_BASE_DIFFICULTY[question.kind] + noise, 4),
        computational=False,
        correct=question.answer,
        distractors=question.wrong,
        kind=question.kind,
    )


def generate(size: int, seed: int = 0) -> list[Item]:
    """``size`` items; the same (size, seed) always gives the same items, in the same order."""
    items = []
    for index in range(size):
        template = TEMPLATES[index % len(TEMPLATES)]
        question = template(seeded_rng("qa-synth", seed, index))
        passages = "\n".join(f"{title}: {text}" for title, text in question.passages)
        item_id = f"qa_synth/{seed}/{index}"
        items.append(
            Item(
                id=item_id,
                domain="qa",
                question=f"Question: {question.question}\n\nPassages:\n{passages}",
                answer=question.answer,
                sim=_traits(question, item_id),
                meta={"template": template.__name__.strip("_"), "kind": question.kind},
            )
        )
    return items


def load_qa_synth(source: Source = DEFAULT_SOURCE, seed: int = 0) -> Benchmark:
    return generated_benchmark("qa_synth", "qa", score_hotpotqa, generate, len(TEMPLATES), source, seed, 240)
