"""``llm4rec recommend``: batch inference, the top-k of many users or histories into one file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import typer

from llm4rec.cli._common import OVERWRITE_HELP, console, progress_bar
from llm4rec.errors import InputError


def recommend_command(
    model: Path = typer.Option(..., "--model", "-m", help="A saved model bundle, or a registry (its current "
                                                          "version)."),
    users: Path = typer.Option(None, "--users", help="User ids: a text file (one per line) or a CSV/Parquet "
                                                     "file with a user_id column."),
    all_users: bool = typer.Option(False, "--all", help="Every user the model was fitted on."),
    histories: Path = typer.Option(None, "--histories", help="Histories of any users: JSON lines {\"id\": ..., "
                                                             "\"history\": [item ids, oldest first]} or Parquet "
                                                             "with columns id and history."),
    k: int = typer.Option(10, "--k", min=1, help="Items per user."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: .parquet, .csv or .jsonl (one row per "
                                                      "recommendation: user_id, rank, item_id, score)."),
    unknown: str = typer.Option("error", "--unknown", help="With --users, an id the model does not know: error "
                                                           "(names the line) or fallback (popularity)."),
    include_seen: bool = typer.Option(False, "--include-seen", help="Also recommend items of the history."),
    block: int = typer.Option(None, "--block", min=1, help="Users scored at once (default 1,024, fewer past ~200k "
                                                           "items: memory is about block x items x 10 bytes, the "
                                                           "scores, their copy and the top-k work space; the "
                                                           "default keeps it under 2 GiB)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS", help="Score on a Ray cluster (the ray extra): "
                                                                   "auto (the one `ray start` runs here), local "
                                                                   "(one started for this run) or host:port. "
                                                                   "Every node must read the model at its path."),
    workers: int = typer.Option(None, "--workers", min=1, help="With --ray: scoring actors, one CPU each "
                                                               "(default: the cluster's CPUs)."),
) -> None:
    """Write the top-k of many users (by id, or all of them) or of given histories to a file, streaming in
    bounded memory; nothing is written unless the whole run succeeds."""
    from llm4rec import batch
    from llm4rec.cli._common import check_output_file
    from llm4rec.models import Recommender
    from llm4rec.serving.registry import ModelRegistry

    if sum(x is not None and x is not False for x in (users, all_users or None, histories)) != 1:
        raise InputError("whom to recommend for?", expected="exactly one of --users FILE, --all, --histories FILE")
    if unknown not in ("error", "fallback"):
        raise InputError("bad --unknown", value=unknown, expected="error or fallback")
    if out.suffix.lower() not in batch.FORMATS:
        raise InputError("unknown output format", path=out, value=out.suffix,
                         expected="a file name ending in " + ", ".join(batch.FORMATS))
    check_output_file(out, overwrite=overwrite, option="--out")
    if workers is not None and ray is None:
        raise InputError("--workers goes with --ray", value=workers, expected="--ray ADDRESS as well")
    if not model.exists():
        raise InputError("no model there", path=model, expected="a saved bundle or a registry")
    if ray is not None:
        _recommend_on_ray(model, users, all_users, histories, k, out, unknown, include_seen, block, overwrite, ray,
                          workers)
        return
    if (model / "CURRENT.json").is_file():
        version, recommender = ModelRegistry(model).load()
        console.print(f"{model}: version {version}")
    else:
        recommender = Recommender.load(model)
    block = block or batch.auto_block(recommender.n_items_)
    if all_users:
        total, blocks = batch.all_users(recommender, block)
    elif users is not None:
        total, blocks = batch.users_from_file(recommender, users, block, unknown)
    else:
        total, blocks = batch.histories_from_file(histories, block)
    _run_with_progress(f"recommending ({recommender.name}, k={k})", total, out, lambda advance: batch.recommend_to_file(
        recommender, blocks, out, k, exclude_seen=not include_seen, overwrite=overwrite, progress=advance))


def _run_with_progress(label: str, total: int | None, out: Path, run: Callable[[Callable[[int], None]], int]) -> None:
    """``run(advance)`` (returns the rows written; calls ``advance(users done)``) under a progress bar, then the
    closing line with its speed."""
    start = time.perf_counter()
    done = [0]
    with progress_bar() as progress:
        task = progress.add_task(label, total=total)

        def advance(n: int) -> None:
            done[0] = n
            progress.update(task, completed=n)

        rows = run(advance)
    seconds = time.perf_counter() - start
    console.print(f"wrote {out}: {rows} recommendations for {done[0]} users in {seconds:.1f} s "
                  f"({done[0] / max(seconds, 1e-9):,.0f} users/s)")


def _recommend_on_ray(model: Path, users: Path | None, all_users: bool, histories: Path | None, k: int, out: Path,
                      unknown: str, include_seen: bool, block: int | None, overwrite: bool, address: str,
                      workers: int | None) -> None:
    """``recommend --ray``: the same file, scored by Ray actors (ray is imported only here)."""
    import logging

    from llm4rec import batch
    from llm4rec.distributed.batch import Requests, recommend_ray
    from llm4rec.serving.registry import ModelRegistry

    if (model / "CURRENT.json").is_file():  # the current version's directory: it does not change under the run
        current = ModelRegistry(model).current()
        if current is None:
            raise InputError("the registry has no current model version", path=model, expected="a published version")
        console.print(f"{model}: version {current[0]}")
        model = current[1]
    if block is None:  # sized for the catalogue, as in one process; the driver never loads the model
        import json

        block = batch.auto_block(len(json.loads((model / "items.json").read_text(encoding="utf-8"))["tokens"]))
    requests = Requests("all") if all_users else Requests("users", users, unknown) if users is not None \
        else Requests("histories", histories)
    from llm4rec.distributed.cluster import require_ray

    require_ray()
    import ray.data  # noqa: F401 - configures its loggers on import; quieten them after

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-run INFO lines would break the progress bar
    _run_with_progress(f"recommending on Ray ({address}, k={k})", None, out, lambda advance: recommend_ray(
        model, requests, out, k, exclude_seen=not include_seen, workers=workers, block=block, address=address,
        overwrite=overwrite, progress=advance))
