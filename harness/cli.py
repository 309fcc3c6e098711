"""The `spogw` command. Heavy imports happen inside the commands, so `spogw --help` is instant.

Longer than 400 lines because it is the composition root: one short function per subcommand and
the parser, each calling into the layers below (it is the one harness module besides harness.run
that may call the reports).

Exit codes: 0 success; 1 a failure while working (a full disk; a bug, with its traceback); 2 bad
input (file, field, value named; also a folder that cannot be written); 3 a service the run needs
does not answer (the executor's circuit breaker opened, the tracking server is down; re-running the
same command resumes); 130 interrupted (Ctrl-C; run/sweep resume when run again); 141 the output
pipe closed (``| head``). Operational failures are told apart from bugs in harness/errors.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spogw.harness.config import ExperimentConfig

EXIT_BAD_INPUT = 2
EXIT_SERVICE_DOWN = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
LOCAL_RAY = "local"
"""``--ray`` without an address: a Ray instance started on this machine for the run."""


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def _list(args: argparse.Namespace) -> int:
    from spogw.harness.catalog import experiment_files, registries

    if args.what == "experiments":
        import yaml

        for path in experiment_files():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                data = {}
            description = str(data.get("description", "")).strip().splitlines()
            print(f"{path.relative_to(path.parents[1])}  {description[0] if description else ''}")
        return 0
    registry = registries()[args.what]
    width = max((len(entry.name) for entry in registry), default=0)
    for entry in registry:
        print(f"{entry.name:<{width}}  {entry.description}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from spogw.harness.config import load_experiment

    config = load_experiment(args.experiment, args.set)
    labels = ", ".join(m.display_label for m in config.methods)
    benchmarks = ", ".join(b.name for b in config.benchmarks)
    print(f"{args.experiment}: valid (version {config.version})")
    print(
        f"  experiment {config.name}: methods [{labels}] on [{benchmarks}], seeds {config.seeds}, "
        f"{config.iterations} iteration(s), executor {config.executor.name}"
        + (f":{config.executor.profile}" if config.executor.name == "sim" else "")
    )
    return 0


def _validate_workflow(args: argparse.Namespace) -> int:
    from spogw.harness.workflows.validate import WorkflowInvalid, validate_workflow

    failures = 0
    for path in args.files:
        try:
            workflow = validate_workflow(Path(path).read_text(encoding="utf-8"))
        except WorkflowInvalid as err:
            failures += 1
            print(f"{path}: invalid: {err}")
        except UnicodeDecodeError as err:
            failures += 1
            print(f"{path}: invalid: not UTF-8 text (byte {err.start}: {err.reason})")
        except OSError as err:
            raise UsageError(f"{path}: cannot read ({err.strerror})") from None
        else:
            print(f"{path}: ok (operators: {', '.join(workflow.operators) or 'none'})")
    return 1 if failures else 0


def _generate(args: argparse.Namespace) -> int:
    from spogw.harness.config import GeneratorConfig, SamplingConfig
    from spogw.harness.policy.model import decoding_mode, load_generator
    from spogw.harness.policy.sampling import SamplingParams
    from spogw.harness.workflows.extract import extract_workflow
    from spogw.harness.workflows.structure import structure_of
    from spogw.harness.workflows.validate import WorkflowInvalid, validate_workflow

    if args.samples < 1:
        raise UsageError("--samples must be positive")
    pretrained = {} if args.generator == "tiny" else {"prompt": args.prompt}
    config = GeneratorConfig(
        name=args.generator,
        model=args.model,
        decoding=args.decoding,
        sampling=SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens),
        **pretrained,
    )
    generator = load_generator(config, device="cpu" if args.cpu else None)
    if args.adapter:
        from spogw.harness.policy.checkpoints import load_adapter_weights

        load_adapter_weights(generator.model, Path(args.adapter), generator.identity)  # refuses another base's
    prompt = generator.prompt(args.domain, args.question)
    params = SamplingParams(
        config.sampling.temperature, config.sampling.top_p, config.sampling.max_new_tokens, tuple(config.sampling.stop)
    )
    samples = generator.sample([prompt] * args.samples, [(args.seed, 0, "cli", k) for k in range(args.samples)], params)
    valid, structures = 0, set()
    for index, sample in enumerate(samples):
        source = extract_workflow(sample.text) or ""
        try:
            validate_workflow(source)
            valid += 1
            structure = structure_of(source)
            structures.add(structure)
            verdict = f"valid: {structure}"
        except WorkflowInvalid as err:
            verdict = f"invalid: {err}"
        print(f"--- sample {index} ({len(sample.completion_ids)} tokens, {verdict})")
        if args.show:
            print(sample.text)
    print(
        f"{generator.identity} ({generator.prompt_format} prompt, {decoding_mode(config)} decoding): "
        f"{valid}/{len(samples)} valid, {len(structures)} distinct operator structures"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from spogw.harness.benchmarks import load_benchmark
    from spogw.harness.catalog import registries
    from spogw.harness.config import ExecutorConfig, format_validation_error
    from spogw.harness.errors import check_file_target
    from spogw.harness.evaluate import evaluate_workflow, status_counts, write_parquet
    from spogw.harness.executors import executor_from_config, parse_executor_spec
    from spogw.harness.executors.base import ExecutorUnavailable
    from spogw.harness.scores import item_scores
    from spogw.harness.workflows.engine import WorkflowEngine, validate_cached
    from spogw.harness.workflows.isolation import isolation_level
    from spogw.harness.workflows.validate import WorkflowInvalid
    from spogw.methods.static import workflow_source
    from spogw.reports.stats import mean_ci

    if args.repeats < 1 or (args.limit is not None and args.limit < 1) or args.concurrency < 1:
        raise UsageError("--repeats, --limit and --concurrency must be positive")
    if args.timeout_s <= 0 or args.call_timeout_s <= 0:
        raise UsageError("--timeout-s and --call-timeout-s must be positive")
    if args.size is not None and args.size < 1:
        raise UsageError(f"--size {args.size}: give a positive number of items")
    if not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction {args.test_fraction}: must be between 0 and 1 (exclusive)")
    registries()["benchmarks"].entry(args.benchmark)  # a miss raises with suggestions
    name, source = workflow_source(args.workflow)
    try:
        validate_cached(source)
    except WorkflowInvalid as err:
        raise UsageError(f"{args.workflow}: invalid workflow: {err}") from None
    executor_name, options = parse_executor_spec(args.executor)
    registries()["executors"].entry(executor_name)  # a miss raises with suggestions, not a pydantic dump
    fields = {
        "name": executor_name,
        "model": args.model,
        "base_url": args.base_url,
        "api_key_env": args.api_key_env,
        "cache": not args.no_cache,
        "max_tokens": args.max_tokens,
        "max_concurrent_calls": args.max_concurrent_calls,
        "concurrency": args.concurrency,
        "call_timeout_s": args.call_timeout_s,
        **options,
    }
    try:
        executor_config = ExecutorConfig(**fields)
    except ValidationError as err:
        raise UsageError(format_validation_error(f"--executor {args.executor}", err, fields)) from None
    executor = executor_from_config(executor_config, seed=args.seed)
    benchmark = load_benchmark(
        args.benchmark,
        path=args.data,
        size=args.size,
        hub=args.hub,
        hub_config=args.hub_config,
        hub_split=args.hub_split,
    )
    if args.split == "all":
        items = list(benchmark.items)
        split = f"all {len(items)} items (train and test together)"
    else:
        items = benchmark.split(args.split, args.test_fraction, args.split_seed)
        split = (
            f"{args.split}: {len(items)} of {len(benchmark.items)} items (--test-fraction {args.test_fraction:g}, "
            f"--split-seed {args.split_seed}; the split `spogw run` uses)"
        )
    if args.limit is not None:
        items = items[: args.limit]
        split += f", first {len(items)} (--limit)"
    default_name = f"{benchmark.name}-{name}-{args.executor.replace(':', '_')}-{args.split}"
    out = Path(args.out) if args.out else _fresh_path(Path("runs/eval"), default_name, ".parquet")
    check_file_target(out, "--out")  # before the evaluation, not after it

    simulated = bool(getattr(executor, "simulated", False))
    banner = " [SIMULATED EXECUTOR: not an LLM result]" if simulated else ""
    print(
        f"workflow {name} on {benchmark.name} ({len(items)} items x {args.repeats} repeats), "
        f"executor {executor.describe()}, isolation {isolation_level()}{banner}",
        file=sys.stderr,
    )

    async def run() -> list:
        engine = WorkflowEngine(
            executor,
            concurrency=args.concurrency,
            timeout_s=args.timeout_s,
            max_calls=args.max_calls,
            grounding=args.answer_grounding,
        )
        try:
            return await evaluate_workflow(
                source,
                benchmark,
                items,
                engine,
                args.repeats,
                progress=not args.quiet,
                description=f"{name}/{benchmark.name}",
            )
        finally:
            await engine.close()

    runs = asyncio.run(run())
    per_item = item_scores(runs)  # (benchmark, item) -> the item score (harness/scores.py)
    counts = status_counts(runs)
    metadata = {"workflow": name, "executor": executor.describe(), "simulated": simulated, "split": args.split}
    write_parquet(runs, out, metadata)
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in runs)
    print(f"benchmark   {benchmark.name} ({benchmark.source})")
    print(f"workflow    {name}")
    print(f"executor    {executor.describe()}")
    print(f"split       {split}")
    if per_item:
        print(f"score       {mean_ci(list(per_item.values()), covers='items', seed=args.seed)}{banner}")
    else:
        print("score       none: no run was scorable")
    print("status      " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    dollars = sum(r.cost_usd for r in runs)
    priced = f", ${dollars:.4f}" if dollars else ""
    print(f"cost        {sum(r.calls for r in runs)} executor calls, {tokens} tokens{priced}")
    stats = getattr(executor, "stats", None)
    if stats is not None:
        print(f"requests    {stats.summary()}")
    print(f"per-item    {out}")
    if not per_item and counts.get("infra_error", 0):
        raise ExecutorUnavailable(
            f"every one of the {counts['infra_error']} runs ended in infra_error: the executor "
            f"{executor.describe()} did not answer (see the request line above); nothing was scored"
        )
    return 0


def _fresh_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or ``stem-2``, ``stem-3``, ... when taken: a default output never
    replaces an earlier result (an explicit --out does, as asked)."""
    path, number = folder / f"{stem}{suffix}", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}{suffix}"
    return path


def _seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1") from None


def _refuse_a_launcher(command: str) -> None:
    """Under `accelerate launch` / torchrun every process would run the whole sweep: collect, pay
    for executor calls and write the same folders. A launch trains one cell (`spogw run`)."""
    from spogw.harness.distributed import launched
    from spogw.harness.errors import InputError

    if launched():
        raise InputError(
            f"spogw {command} was started by a launcher (WORLD_SIZE > 1): every process would run the whole "
            f"{command}. Run it as one process; a launch trains one cell of `spogw run` (docs/gpu.md)."
        )


def _launched_cell(args: argparse.Namespace, config: ExperimentConfig) -> int | None:
    """Under `accelerate launch` / torchrun (WORLD_SIZE > 1): one trained cell on every rank
    (harness/launch.py): rank 0 runs it as `spogw run` would, the others join its update steps.
    None without a launcher. Raises InputError unless --methods and --seeds name one trained cell."""
    from spogw.harness.distributed import init_from_environment, launched
    from spogw.harness.launch import launch_token
    from spogw.harness.plan import select_methods, select_seeds
    from spogw.methods.config import method_kind

    if not launched():
        return None
    from spogw.harness.config import method_config
    from spogw.harness.errors import InputError

    cells = [(s, k) for s in select_methods(config, _methods(args)) for k in select_seeds(config, _seeds(args.seeds))]
    trained = len(cells) == 1 and method_kind(method_config(cells[0][0])) == "trained"
    if args.ray is not None or args.dry_run or not trained:
        raise InputError(
            f"spogw run was started by a launcher (WORLD_SIZE={os.environ.get('WORLD_SIZE')}): a launch trains one "
            f"cell on its ranks; give --methods and --seeds that select one trained cell (selected: {len(cells)}"
            f"{', with --ray' if args.ray is not None else ''}{', with --dry-run' if args.dry_run else ''}). "
            "Many cells at once: spogw run --ray (docs/cluster.md)."
        )
    ranks = init_from_environment()
    token = launch_token(ranks)
    run_dir = Path(args.run_dir) if args.run_dir else None
    if ranks.main:
        from spogw.harness.runner import run_experiment
        from spogw.reports.report import finish_report

        run_experiment(config, run_dir, methods=_methods(args), seeds=_seeds(args.seeds), force_new=args.force_new,
                       progress=not args.quiet, finish=finish_report, launch_token=token)  # fmt: skip
        return 0
    from spogw.harness.runner import follow_cell

    follow_cell(config, run_dir, cells[0][0], cells[0][1], token)
    return 0


def _methods(args: argparse.Namespace) -> list[str] | None:
    return [m for m in args.methods.split(",") if m] if args.methods else None


def _run(args: argparse.Namespace) -> int:
    from spogw.harness.config import load_experiment
    from spogw.harness.plan import load_splits, plan_experiment, select_methods, select_seeds
    from spogw.harness.run_folder import default_run_dir
    from spogw.harness.runner import run_experiment

    config = load_experiment(args.experiment, args.set)
    ray_flags = {"--ray-workers": args.ray_workers, "--cpus-per-cell": args.cpus_per_cell,
                 "--gpus-per-cell": args.gpus_per_cell, "--cell-retries": args.cell_retries}  # fmt: skip
    given = [flag for flag, value in ray_flags.items() if value is not None]
    if args.ray is None and given:
        raise UsageError(f"{', '.join(given)}: only with --ray (the cells as Ray tasks); this run is one process")
    launched = _launched_cell(args, config)
    if launched is not None:
        return launched
    methods = _methods(args)
    seeds = _seeds(args.seeds)
    if args.dry_run:
        splits = load_splits(config)
        plan = plan_experiment(config, splits, select_methods(config, methods), select_seeds(config, seeds))
        for split in splits:
            evaluated = f"{len(split.evaluated)} {config.evaluation.split}"
            print(f"{split.benchmark.name}: {len(split.train)} train / {evaluated} items")
        print(plan.describe())
        return 0
    from spogw.harness.executors.base import ExecutorUnavailable
    from spogw.reports.report import finish_report

    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config.name)
    try:
        if args.ray is not None:
            from spogw.harness.cluster import RayOptions, run_on_ray

            defaults = RayOptions()
            options = RayOptions(
                address=None if args.ray == LOCAL_RAY else args.ray,
                workers=args.ray_workers,
                cpus_per_cell=defaults.cpus_per_cell if args.cpus_per_cell is None else args.cpus_per_cell,
                gpus_per_cell=args.gpus_per_cell,
                max_retries=defaults.max_retries if args.cell_retries is None else args.cell_retries,
            )
            run_on_ray(config, run_dir, options, methods, seeds, args.force_new, not args.quiet, finish_report)
        else:
            run_experiment(
                config, run_dir, methods=methods, seeds=seeds, force_new=args.force_new, progress=not args.quiet,
                finish=finish_report,
            )  # fmt: skip
    except ExecutorUnavailable as err:
        raise ExecutorUnavailable(
            f"{err}\nEverything finished before it is kept in {run_dir}; run the same command again to resume "
            "once the endpoint answers."
        ) from None
    print(results_summary((run_dir / "report.md").read_text()))
    print(f"report      {run_dir / 'report.md'} (also report.html, results.tex, figures in report/)")
    print(f"run folder  {run_dir}")
    return 0


def results_summary(markdown: str) -> str:
    """What ``spogw run`` prints at its end: the report's title and header lines (executor, generator,
    warnings, what the report covers) and its Results table; the rest stays in report.md."""
    lines = markdown.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    kept = lines[:head]
    if "## Results" in lines:
        start = lines.index("## Results")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        kept += lines[start:end]
    return "\n".join(kept).rstrip() + "\n"


def _sweep(args: argparse.Namespace) -> int:
    from spogw.harness.run_folder import default_run_dir
    from spogw.harness.sweeps.config import load_sweep
    from spogw.harness.sweeps.study import rerun_best, run_sweep
    from spogw.reports.report import finish_report

    _refuse_a_launcher("sweep")
    from spogw.reports.sweep import write_sweep_report

    sweep = load_sweep(args.sweep, args.set)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(sweep.config.name)
    study = run_sweep(
        sweep, run_dir, args.storage, args.mlflow_uri, args.n_trials, args.worker, finish=finish_report,
        force_new=args.force_new,
    )  # fmt: skip
    if args.worker:
        print(f"worker done: study {sweep.config.name} has its trials; the starting process writes the report")
        return 0
    best_dir = None if args.no_rerun else rerun_best(sweep, study, run_dir, args.mlflow_uri, finish=finish_report)
    report = write_sweep_report(run_dir, sweep, study, best_dir, args.mlflow_uri)
    print(f"sweep folder  {run_dir}\nreport        {report.markdown}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from spogw.harness.errors import check_folder_target
    from spogw.harness.run_folder import export

    if args.out:
        check_folder_target(Path(args.out), "--out")  # the tables are written into it
    for path in export(Path(args.run_dir), Path(args.out) if args.out else None):
        print(path)
    return 0


def _run_folder_config(run_dir: Path) -> ExperimentConfig:
    """The experiment a run folder holds (its resolved copy); UsageError when it is not a run folder."""
    from spogw.harness.config import load_experiment
    from spogw.harness.run_folder import RESOLVED

    if not (run_dir / RESOLVED).is_file():
        raise UsageError(f"{run_dir} is not a run folder: {run_dir / RESOLVED} does not exist")
    return load_experiment(run_dir / RESOLVED)


def _report(args: argparse.Namespace) -> int:
    from spogw.harness import cells
    from spogw.harness.tracking import Tracker
    from spogw.reports.report import log_report, write_report

    run_dir = Path(args.run_dir)
    config = _run_folder_config(run_dir)
    if cells.shard_cells(run_dir):
        cells.merge(run_dir)  # the cells' latest rows (a killed run's last merge may be missing)
    report = write_report(run_dir, config)
    tracker = Tracker(run_dir, config.tracking.experiment_name or config.name, config.tracking.uri)
    log_report(report, tracker, tracker.parent_id)
    for path in (report.markdown, report.html, report.latex, *report.figures):
        print(path)
    return 0


def _power(args: argparse.Namespace) -> int:
    from spogw.harness.scores import own_executor, read_item_scores
    from spogw.reports.comparison import comparison_pairs
    from spogw.reports.power import planning_markdown, planning_table

    run_dir = Path(args.run_dir)
    config = _run_folder_config(run_dir)
    if args.effect is not None and not 0 < args.effect <= 1:
        raise UsageError(f"--effect {args.effect}: give a difference of scores between 0 and 1")
    if not 0 < args.alpha < args.power < 1:
        raise UsageError(f"--alpha {args.alpha} and --power {args.power}: need 0 < alpha < power < 1")
    frame = own_executor(read_item_scores(run_dir))
    if frame.empty:
        raise UsageError(f"{run_dir}: no scored evaluation yet; run the pilot first")
    declared = [tuple(pair) for pair in config.stats.comparisons]
    pairs = comparison_pairs(sorted(frame["method"].unique()), config.stats.baseline, declared)
    if not pairs:
        raise UsageError(f"{run_dir}: no comparison to plan: set stats.baseline or stats.comparisons in the experiment")
    alternative = config.stats.alternative
    table = planning_table(frame, pairs, args.effect, args.alpha, args.power, alternative)
    simulated = "; SIMULATED executor" if config.simulation().any else ""
    print(f"Sample-size planning from the pilot run {run_dir} ({config.name}{simulated})\n")
    print(planning_markdown(table, args.alpha, args.power, args.effect, alternative), end="")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from spogw.harness.atomic import atomic_write_text
    from spogw.harness.errors import check_file_target
    from spogw.harness.schema_doc import render

    text = render()
    if args.out:
        check_file_target(Path(args.out), "--out")
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spogw",
        description="SPOGW evaluation-and-ablation harness: train workflow generators, evaluate, compare.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list registered methods, benchmarks, executors, ...")
    listing.add_argument(
        "what", choices=["methods", "benchmarks", "executors", "generators", "workflows", "experiments"]
    )
    listing.set_defaults(func=_list)

    check = commands.add_parser("check", help="validate an experiment file (nothing runs, nothing is written)")
    check.add_argument("experiment")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    check.set_defaults(func=_check)

    lint = commands.add_parser("validate-workflow", help="check workflow files against the allowlist")
    lint.add_argument("files", nargs="+")
    lint.set_defaults(func=_validate_workflow)

    generate = commands.add_parser("generate", help="sample workflows from a generator (builds tiny on first use)")
    generate.add_argument("--generator", default="tiny", help="tiny | smol | hf")
    generate.add_argument("--model", default=None, help="model id or path (generator hf)")
    generate.add_argument("--domain", default="math", choices=["math", "code", "qa"])
    generate.add_argument("--question", default="Ava has 12 apples and buys 3 bags of 4 apples. How many apples now?")
    generate.add_argument("--samples", type=int, default=8)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--show", action="store_true", help="print every sampled completion")
    generate.add_argument("--decoding", choices=["auto", "free", "grammar"], default="auto", help="generator.decoding")
    generate.add_argument(
        "--prompt", choices=["auto", "chat", "completion"], default="auto", help="generator.prompt (pretrained models)"
    )
    generate.add_argument("--max-new-tokens", type=int, default=512, help="longest completion in tokens")
    generate.add_argument("--adapter", default=None, help="a trained adapter (checkpoints/<method>/seed<s>/iter<k>)")
    generate.add_argument("--cpu", action="store_true", help="stay on the CPU even if a GPU is present")
    generate.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads of this process (default: half the cores)"
    )
    generate.set_defaults(func=_generate)

    evaluate = commands.add_parser("eval", help="evaluate a workflow on a benchmark with an executor")
    evaluate.add_argument("--benchmark", required=True)
    evaluate.add_argument("--workflow", required=True, help="static workflow name or workflow file")
    evaluate.add_argument("--executor", default="sim:medium", help="executor[:profile], e.g. sim:strong")
    evaluate.add_argument("--repeats", type=int, default=3)
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate the first N items only")
    evaluate.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="test",
        help="which items: the test split `spogw run` evaluates on (default), its train split, or all",
    )
    evaluate.add_argument("--test-fraction", type=float, default=0.8, help="the test split's share of the items")
    evaluate.add_argument("--split-seed", type=int, default=0)
    evaluate.add_argument("--data", default=None, help="benchmark data file in the upstream format")
    evaluate.add_argument("--hub", default=None, help="a `datasets` dataset: hub id or local dataset folder")
    evaluate.add_argument("--hub-config", default=None, help="the dataset's configuration (e.g. main)")
    evaluate.add_argument("--hub-split", default=None, help="the dataset's split (default: the benchmark's)")
    evaluate.add_argument("--model", default=None, help="executor model (openai: served name; hf: id, folder, smol)")
    evaluate.add_argument("--base-url", default=None, help="openai executor endpoint, e.g. http://127.0.0.1:8000/v1")
    evaluate.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    evaluate.add_argument("--max-concurrent-calls", type=int, default=16, help="openai requests in flight")
    evaluate.add_argument("--max-tokens", type=int, default=1024, help="longest executor reply per call")
    evaluate.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    evaluate.add_argument("--size", type=int, default=None, help="items to generate (generated benchmarks)")
    evaluate.add_argument("--seed", type=int, default=0, help="simulator seed; also seeds the bootstrap")
    evaluate.add_argument("--concurrency", type=int, default=4)
    evaluate.add_argument("--timeout-s", type=float, default=60.0, help="wall-clock limit per workflow run")
    evaluate.add_argument(
        "--call-timeout-s",
        type=float,
        default=120.0,
        help="wall-clock limit of one executor call (a CPU-served model needs minutes; a run that times out "
        "while waiting on the executor is infra_error, not a score of 0)",
    )
    evaluate.add_argument("--max-calls", type=int, default=32, help="executor calls allowed per workflow run")
    evaluate.add_argument(
        "--answer-grounding",
        choices=["contained", "verbatim"],
        default="contained",
        help="how the answer must come from the executor (ungrounded runs score 0; see docs/workflows.md)",
    )
    evaluate.add_argument(
        "--out", default=None, help="per-item parquet (default: a new runs/eval/<benchmark>-<workflow>-... file)"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads of this process (default: half the cores)"
    )
    evaluate.set_defaults(func=_eval)
    runner = commands.add_parser("run", help="run (or resume) an experiment: methods x seeds x iterations")
    runner.add_argument("experiment")
    runner.add_argument("--run-dir", default=None, help="run folder (default runs/<experiment name>)")
    runner.add_argument("--methods", default=None, help="comma-separated method labels to run (default all)")
    runner.add_argument("--seeds", default=None, help="comma-separated seeds to run (default all)")
    runner.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    runner.add_argument(
        "--dry-run", action="store_true", help="print the plan (runs, samples, executor calls) and stop"
    )
    runner.add_argument("--force-new", action="store_true", help="move an incompatible run folder aside and start over")
    runner.add_argument("--quiet", action="store_true", help="no progress bar")
    runner.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads of this process (default: half the cores)"
    )
    cluster = runner.add_argument_group("cells on Ray (the [cluster] extra; docs/cluster.md)")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        default=None,
        metavar="ADDRESS",
        help="run the cells as Ray tasks: on a local Ray instance, or on the cluster at ADDRESS (auto, HOST:6379)",
    )
    cluster.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        help="CPUs of the local Ray instance (cells at once; default: all)",
    )
    cluster.add_argument("--cpus-per-cell", type=float, default=None, help="CPUs a cell asks Ray for (default 1)")
    cluster.add_argument(
        "--gpus-per-cell",
        type=float,
        default=None,
        help="GPUs a cell asks Ray for (default: 1 if the cluster has GPUs)",
    )
    cluster.add_argument(
        "--cell-retries", type=int, default=None, help="runs again of a cell whose worker died (default 2)"
    )
    runner.set_defaults(func=_run)

    sweeper = commands.add_parser("sweep", help="run (or join) an Optuna sweep over an experiment's settings")
    sweeper.add_argument("sweep", help="a sweep file (experiments/sweep_*.yaml)")
    sweeper.add_argument("--run-dir", default=None, help="sweep folder (default runs/<sweep name>)")
    sweeper.add_argument(
        "--n-trials", type=int, default=None, help="trials in total over all workers (default: the file's)"
    )
    sweeper.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: sqlite:///F (default: the sweep folder), postgresql://..., journal:F",
    )
    sweeper.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: the sweep folder's sqlite)")
    sweeper.add_argument("--worker", action="store_true", help="join an existing study (started without --worker)")
    sweeper.add_argument(
        "--force-new", action="store_true", help="move a sweep started with another sweep file aside and start over"
    )
    sweeper.add_argument(
        "--no-rerun", action="store_true", help="skip re-running the best configuration on fresh seeds"
    )
    sweeper.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep field")
    sweeper.set_defaults(func=_sweep)
    exporter = commands.add_parser(
        "export", help="write a run folder's rollouts, eval_items and iterations tables to parquet"
    )
    exporter.add_argument("run_dir")
    exporter.add_argument("--out", default=None, help="folder for the parquet files (default: the run folder)")
    exporter.set_defaults(func=_export)
    reporter = commands.add_parser(
        "report", help="(re)write a run folder's report.md, report.html, results.tex and figures; log them to MLflow"
    )
    reporter.add_argument("run_dir")
    reporter.set_defaults(func=_report)
    planner = commands.add_parser(
        "power", help="sample-size planning from a pilot run: detectable difference, items and seeds needed"
    )
    planner.add_argument("run_dir")
    planner.add_argument(
        "--effect",
        type=float,
        default=None,
        help="the smallest difference that matters",
    )
    planner.add_argument("--alpha", type=float, default=0.05, help="the level of the family (default 0.05)")
    planner.add_argument("--power", type=float, default=0.8, help="the power to reach (default 0.8)")
    planner.set_defaults(func=_power)
    schema = commands.add_parser("schema", help="the experiment-file reference (every field, type, default, meaning)")
    schema.add_argument("--out", default=None, help="write it to this file (docs/experiments.md)")
    schema.set_defaults(func=_schema)
    return parser


RESUMABLE = ("run", "sweep")
"""Commands whose work is kept as it is done: interrupted, the same command resumes it."""


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end is closed: polling the writing end of
    such a pipe reports POLLERR (Linux, macOS). A broken pipe elsewhere leaves stdout writable."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real stdout (captured, closed)
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spogw.harness import console
    from spogw.harness.errors import EXIT_FAILURE, CellsFailed, InputError, ServiceUnavailable, operational_failure
    from spogw.harness.registry import RegistryError

    console.configure(quiet=bool(getattr(args, "quiet", False)))
    try:
        threads = getattr(args, "threads", None)
        if threads is not None:
            if threads < 1:
                raise UsageError(f"--threads {threads}: give a positive number of threads")
            from spogw.harness.torch_threads import ENV

            os.environ[ENV] = str(threads)  # read where torch work starts (harness/torch_threads.py)
        return int(args.func(args))
    except (UsageError, InputError, RegistryError, FileNotFoundError, NotImplementedError) as err:
        print(f"spogw: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ServiceUnavailable as err:
        print(f"spogw: stopped: {err}", file=sys.stderr)
        return EXIT_SERVICE_DOWN
    except CellsFailed as err:
        print(f"spogw: stopped: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        resume = "; run the same command to resume" if args.command in RESUMABLE else ""
        print(f"\nspogw: interrupted{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe broke (a sandbox worker's): a failure to see, not a closed `| head`
        # the reader went away (`spogw run --dry-run | head`): nothing to say, and nowhere to say it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:
        failure = operational_failure(err)
        if failure is None:
            raise  # a bug: keep its traceback
        print(f"spogw: stopped: {failure.message}", file=sys.stderr)
        return failure.exit_code


if __name__ == "__main__":
    sys.exit(main())
