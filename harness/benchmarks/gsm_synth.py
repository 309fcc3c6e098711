"""gsm_synth: GSM-style arithmetic word problems from the harness's own seeded generator.

No download: items are generated from fourteen templates (two to five reasoning steps, small or
large numbers) with a fixed seed, so every machine gets the same benchmark. Scoring is GSM8K's:
the last number of the answer equals the reference. Each item also carries what the simulated
executor needs: a difficulty that grows with the number of steps, whether the question shows a
number of three or more digits (its kind: a program helps there, text arithmetic slips), and the
plausible wrong answers (partial results, off-by-one-step slips) a model tends to give.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from spogw.harness.benchmarks.base import Benchmark, Item, SimTraits, seeded_rng
from spogw.harness.benchmarks.data import DEFAULT_SOURCE, Source, generated_benchmark
from spogw.harness.benchmarks.scoring import score_last_number
from spogw.harness.workflows.answers import format_number

NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam")
THINGS = ("apples", "stickers", "marbles", "books", "cookies", "pencils", "stamps", "shells")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    partials: tuple[int, ...]
    """Intermediate results: the wrong answers of a model that stops early or slips a step."""
    steps: int


Template = Callable[[random.Random], Problem]


def _buy_and_give(r: random.Random) -> Problem:
    name, thing = r.choice(NAMES), r.choice(THINGS)
    a, b, c, d = r.randint(5, 40), r.randint(2, 6), r.randint(3, 12), r.randint(1, 10)
    bought = b * c
    return Problem(
        f"{name} has {a} {thing}. {name} buys {b} packs with {c} {thing} in each pack, then gives "
        f"{d} {thing} to a friend. How many {thing} does {name} have now?",
        a + bought - d,
        (a + bought, bought, a + b - d),
        3,
    )


def _change(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    price, count = r.randint(2, 9), r.randint(2, 6)
    bill = (price * count // 10 + 1) * 10 + r.choice((0, 10, 20))
    return Problem(
        f"A notebook costs ${price}. {name} buys {count} notebooks and pays with a ${bill} bill. "
        "How many dollars of change does the cashier give back?",
        bill - price * count,
        (price * count, bill - price),
        2,
    )


def _reading(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    a, b, c, d = r.randint(5, 30), r.randint(2, 7), r.randint(5, 30), r.randint(2, 7)
    return Problem(
        f"{name} reads {a} pages a day for {b} days, then {c} pages a day for {d} days. "
        "How many pages does she read in total?",
        a * b + c * d,
        (a * b, c * d, (a + c) * max(b, d)),
        3,
    )


def _comparisons(r: random.Random) -> Problem:
    n1, n2, n3 = r.sample(NAMES, 3)
    a, k, c = r.randint(3, 20), r.randint(2, 5), r.randint(1, 9)
    second = a * k
    third = second - c
    return Problem(
        f"{n1} has {a} marbles. {n2} has {k} times as many marbles as {n1}. {n3} has {c} fewer "
        f"marbles than {n2}. How many marbles do the three of them have altogether?",
        a + second + third,
        (a + second, third, second + third, a + second + second + c),
        4,
    )


def _sharing(r: random.Random) -> Problem:
    kids, each, eaten = r.randint(2, 8), r.randint(4, 12), r.randint(1, 3)
    total = kids * each
    return Problem(
        f"A baker shares {total} cookies equally among {kids} children. Each child eats {eaten} "
        "cookies right away. How many cookies do the children have left in total?",
        kids * (each - eaten),
        (each - eaten, each, total - eaten),
        3,
    )


def _percent(r: random.Random) -> Problem:
    stock = r.choice((20, 40, 60, 80))
    pct = r.choice((10, 25, 50))
    later = r.randint(1, stock // 4)
    sold = stock * pct // 100
    return Problem(
        f"A shop has {stock} umbrellas. On Monday it sells {pct}% of them and on Tuesday it sells "
        f"{later} more. How many umbrellas are left?",
        stock - sold - later,
        (stock - sold, sold + later, stock - later),
        3,
    )


def _trip(r: random.Random) -> Problem:
    a, b, c, d, e = r.randint(40, 90), r.randint(2, 5), r.randint(30, 70), r.randint(1, 4), r.randint(5, 60)
    return Problem(
        f"A bus drives at {a} km per hour for {b} hours, stops, then drives at {c} km per hour for {d} "
        f"hours. The last {e} km are on foot. How many kilometres is the whole journey?",
        a * b + c * d + e,
        (a * b + c * d, a * b + e, (a + c) * (b + d) + e),
        4,
    )


def _savings(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    weekly, weeks, spent, gift = r.randint(5, 25), r.randint(4, 12), r.randint(5, 40), r.randint(5, 30)
    saved = weekly * weeks
    return Problem(
        f"{name} saves ${weekly} every week for {weeks} weeks. {name} spends ${spent} on a game and "
        f"then receives ${gift} as a gift. Then {name} doubles the money by selling old toys. "
        "How many dollars does {name} have now?".replace("{name}", name),
        (saved - spent + gift) * 2,
        (saved - spent + gift, saved * 2, (saved + gift) * 2, (saved - spent) * 2),
        5,
    )


def _factory(r: random.Random) -> Problem:
    per_hour, hours, days, price = r.randint(120, 980), r.randint(6, 16), r.randint(12, 31), r.randint(3, 47)
    units = per_hour * hours * days
    return Problem(
        f"A factory makes {per_hour} bottles per hour and runs {hours} hours a day for {days} days. "
        f"Each bottle sells for ${price}. What is the total revenue in dollars?",
        units * price,
        (units, per_hour * hours * price, units * price // 10),
        3,
    )


def _warehouse(r: random.Random) -> Problem:
    boxes, per_box = r.randint(140, 900), r.randint(24, 144)
    shipped, returned = r.randint(1000, 9000), r.randint(10, 400)
    total = boxes * per_box
    shipped = min(shipped, total - 1)
    return Problem(
        f"A warehouse receives {boxes} boxes with {per_box} cans each. It ships {shipped} cans, "
        f"then {returned} cans are returned. How many cans are in the warehouse now?",
        total - shipped + returned,
        (total, total - shipped, total - shipped - returned),
        4,
    )


def _tiles(r: random.Random) -> Problem:
    rooms, length, width = r.randint(3, 9), r.randint(11, 29), r.randint(9, 23)
    cost, extra = r.randint(13, 57), r.randint(120, 400)
    area = rooms * length * width
    return Problem(
        f"A hotel retiles {rooms} rooms, each {length} m by {width} m. Tiles cost ${cost} per square "
        f"metre and labour adds ${extra} per room. What is the total cost in dollars?",
        area * cost + extra * rooms,
        (area * cost, area, length * width * cost + extra),
        5,
    )


def _interest(r: random.Random) -> Problem:
    deposit, years = r.choice((1000, 2000, 2500, 4000, 5000, 8000)), r.randint(2, 3)
    rate = r.choice((10, 20, 50))
    value = deposit
    partials = []
    for _ in range(years):
        value = value * (100 + rate) // 100
        partials.append(value)
    return Problem(
        f"A deposit of ${deposit} grows by {rate}% every year, the growth added to the balance each "
        f"year. What is the balance in dollars after {years} years?",
        value,
        (*partials[:-1], deposit + deposit * rate * years // 100, deposit * rate // 100 * years),
        2 + years,
    )


def _payroll(r: random.Random) -> Problem:
    workers, wage, days, bonus = r.randint(120, 850), r.randint(85, 240), r.randint(18, 23), r.randint(100, 500)
    return Problem(
        f"A company pays each of its {workers} workers ${wage} per day. They work {days} days this month, "
        f"and each worker also gets a ${bonus} bonus. What is the month's total payroll in dollars?",
        workers * (wage * days + bonus),
        (workers * wage * days, wage * days + bonus, workers * wage * days + bonus),
        4,
    )


def _flights(r: random.Random) -> Problem:
    speed, hours, trips, weeks = r.randint(480, 920), r.randint(2, 9), r.randint(3, 14), r.randint(4, 12)
    return Problem(
        f"A plane flies at {speed} km per hour. Each trip takes {hours} hours and it makes {trips} trips a "
        f"week. How many kilometres does it fly in {weeks} weeks?",
        speed * hours * trips * weeks,
        (speed * hours * trips, speed * hours * weeks, speed * hours),
        3,
    )


TEMPLATES: tuple[Template, ...] = (
    _buy_and_give, _change, _factory, _reading, _warehouse, _comparisons, _payroll, _sharing,
    _tiles, _percent, _flights, _trip, _interest, _savings,
)  # fmt: skip
"""Six of the fourteen templates put a number of three or more digits in the question (the
'large_numbers' kind, where a program helps); the other eight never do."""

_LARGE = re.compile(r"\d{3,}")


def _traits(problem: Problem, item_id: str) -> SimTraits:
    # What a generator can see decides the kind: a number of three or more digits in the question.
    computational = bool(_LARGE.search(problem.question))
    noise = seeded_rng("gsm-difficulty", item_id).gauss(0.0, 0.8)
    # Large numbers make text reasoning, not the problem, harder: the sim charges that per call
    # (SimProfile.text_arithmetic), so a program is not penalised for them.
    difficulty = -1.6 + 0.45 * problem.steps + noise
    wrong = [p for p in dict.fromkeys(problem.partials) if p != problem.answer]
    for slip in (problem.answer + 1, problem.answer - 1, problem.answer * 2):
        if len(wrong) >= 3:
            break
        if slip not in wrong and slip != problem.answer:
            wrong.append(slip)
    return SimTraits(
        difficulty=round(difficulty, 4),
        computational=computational,
        correct=str(problem.answer),
        distractors=tuple(str(w) for w in wrong[:4]),
        kind="large_numbers" if computational else "small_numbers",
    )


def generate(size: int, seed: int = 0) -> list[Item]:
    """``size`` items; the same (size, seed) always gives the same items, in the same order."""
    items = []
    for index in range(size):
        r = seeded_rng("gsm-synth", seed, index)
        template = TEMPLATES[index % len(TEMPLATES)]
        problem = template(r)
        item_id = f"gsm_synth/{seed}/{index}"
        items.append(
            Item(
                id=item_id,
                domain="math",
                question=problem.question,
                answer=str(problem.answer),
                sim=_traits(problem, item_id),
                meta={"template": template.__name__.strip("_"), "steps": problem.steps},
            )
        )
    return items


def load_gsm_synth(source: Source = DEFAULT_SOURCE, seed: int = 0) -> Benchmark:
    return generated_benchmark("gsm_synth", "math", score_last_number, generate, len(TEMPLATES), source, seed, 250)


__all__ = ["TEMPLATES", "format_number", "generate", "load_gsm_synth"]
