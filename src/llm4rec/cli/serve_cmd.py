"""``llm4rec serve``, ``publish``, ``keys`` and ``events``: the recommendation service from the command line."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from llm4rec.cli._common import console, progress_bar
from llm4rec.errors import InputError

DEMO_DIR = Path("llm4rec-demo")
STORE_HELP = "Event store: a SQLite file (created if missing) or a URL (sqlite:///FILE, postgresql://USER@HOST/DB)."

keys_app = typer.Typer(help="Create, list and revoke the service's API keys (stored hashed).", no_args_is_help=True)
events_app = typer.Typer(help="The service's logged events.", no_args_is_help=True)


def serve_command(
    model: Path = typer.Option(None, "--model", "-m", help="A model registry (see `llm4rec publish`; hot reload "
                                                          "and rollback) or one saved model bundle."),
    store: str = typer.Option(None, "--store", help=STORE_HELP + " Default: llm4rec-events.db here, or the "
                                                   "demo directory's with --demo."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (they share the store and the "
                                                            "registry)."),
    policy: str = typer.Option("greedy", "--policy", help="The policy when a request names none: greedy, "
                                                          "thompson, epsilon-greedy, uniform, ucb1."),
    candidates: int = typer.Option(100, "--candidates", min=1, help="Candidates per request for the policy."),
    max_k: int = typer.Option(100, "--max-k", min=1, help="The largest list a request may ask for."),
    ann_threshold: int = typer.Option(50_000, "--ann-threshold", min=0,
                                      help="Catalogues larger than this use a faiss index (re-scored exactly)."),
    cors: list[str] = typer.Option(None, "--cors", help="An origin allowed by CORS (repeatable); default: off."),
    metrics_key: bool = typer.Option(False, "--metrics-key", help="Put /metrics behind a read key."),
    demo: bool = typer.Option(False, "--demo", help="Train a small semantic-knn model on the built-in synthetic "
                                                    "data (once, in ./llm4rec-demo), serve it, print an admin key."),
    reports: Path = typer.Option(None, "--reports", help="A directory of result files (evaluate --json, simulate, "
                                                         "ope) for the dashboard's Reports tab."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
    ray: str = typer.Option(None, "--ray", help="Serve on Ray Serve instead, on this cluster: auto, local, or "
                                                "the head's host:port. The registry and a SQLite store must be "
                                                "readable at the same path on every node (PostgreSQL is best)."),
    replicas: int = typer.Option(2, "--replicas", min=1, help="With --ray: replicas of the service (the fewest, "
                                                              "with --max-replicas)."),
    max_replicas: int = typer.Option(None, "--max-replicas", min=1, help="With --ray: scale on queue length up "
                                                                         "to this many replicas."),
) -> None:
    """Serve a trained model over HTTP: recommendations, similar items, feedback, live items (/docs lists all)."""
    import uvicorn

    from llm4rec.serving.settings import ServiceSettings

    if demo:
        if model is not None:
            raise InputError("--demo trains its own model", value=str(model), expected="--demo or --model, not both")
        model = _demo_registry(DEMO_DIR)
        store = store or str(DEMO_DIR / "events.db")
    elif model is None:
        raise InputError("which model to serve?", expected="--model DIR (a registry or a saved bundle), or --demo")
    if not model.exists():
        raise InputError("no model there", path=model, expected="a registry (llm4rec publish) or a saved bundle")
    if ray is None and max_replicas is not None:
        raise InputError("--max-replicas needs --ray", value=max_replicas, expected="--ray ADDRESS --replicas N "
                                                                                     "--max-replicas M")
    if ray is not None and workers != 1:
        raise InputError("--workers is for the single-machine service", value=workers,
                         expected="--replicas N with --ray")
    settings = ServiceSettings.make(model=model.resolve(), store=_absolute(store or "llm4rec-events.db"),
                                    policy=policy, candidates=candidates, max_k=max_k, ann_threshold=ann_threshold,
                                    cors_origins=list(cors or []), metrics_key=metrics_key,
                                    default_k=min(10, max_k),
                                    reports=None if reports is None else _directory(reports, "--reports"))
    from llm4rec.serving.store import EventStore, redact

    store_obj = EventStore(settings.store)  # fail here, with a clear message, before any worker starts
    if demo:
        key = _create_key(store_obj, "demo admin", ["admin"], None)
        console.print(f"[bold]admin key (shown once):[/bold] {key}")
        console.print(f"try: curl -H 'Authorization: Bearer {key}' "  # the built-in data's users are 1..1000
                      f"'http://{host}:{port}/v1/users/1/recommendations?k=5'", soft_wrap=True)
        console.print(f"web app: http://{host}:{port}/?key={key}  ·  dashboard: "
                      f"http://{host}:{port}/dashboard?key={key}", soft_wrap=True)
    store_obj.close()
    console.print(f"serving {model} · store {redact(settings.store)} · web app http://{host}:{port}/ · API "
                  f"http://{host}:{port}/docs")
    if ray is not None:
        _serve_on_ray(settings, ray, host=host, port=port, replicas=replicas, max_replicas=max_replicas)
        return
    os.environ.update(settings.to_environment())
    uvicorn.run("llm4rec.serving.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level=log_level)


def _serve_on_ray(settings, address: str, *, host: str, port: int, replicas: int, max_replicas: int | None) -> None:
    """The same app as replicas on Ray Serve (llm4rec.distributed.serve), until Ctrl-C."""
    from llm4rec.distributed.cluster import session
    from llm4rec.distributed.serve import ServeOptions, run_until_interrupted

    options = ServeOptions.make(replicas=replicas, max_replicas=max_replicas, host=host, port=port)
    with session(address):
        run_until_interrupted(settings, options, echo=console.print)


def _directory(path: Path, option: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{option}: no such directory", path=path, expected="an existing directory")
    return path.resolve()


def _absolute(store: str) -> str:
    """A bare SQLite path made absolute, so every worker opens the same file."""
    return store if "://" in store else str(Path(store).resolve())


def _demo_registry(root: Path) -> Path:
    """``root/registry``, with a semantic-knn model of the built-in data published there (trained only once)."""
    from llm4rec.serving.registry import ModelRegistry

    registry = ModelRegistry(root / "registry")
    if registry.current() is not None:
        console.print(f"demo model: {root / 'registry'} (already trained)")
        return root / "registry"
    from llm4rec.data.synthetic import make_synthetic
    from llm4rec.models import create_model

    with progress_bar() as progress:
        progress.add_task("demo: training semantic-knn on the built-in synthetic data", total=None)
        data = make_synthetic(seed=2026)
        model = create_model("semantic-knn").fit(data)
        bundle = model.save(root / "bundle", overwrite=(root / "bundle").exists())
    registry.publish(bundle)
    console.print(f"demo model: {root / 'registry'} ({data.n_users} users, {data.n_items} items)")
    return root / "registry"


def publish_command(
    bundle: Path = typer.Argument(None, help="A saved model bundle (Recommender.save, or evaluate --save-model)."),
    registry: Path = typer.Option(..., "--registry", "-r", help="The registry root (created if missing)."),
    rollback: bool = typer.Option(False, "--rollback", help="Instead: point the registry back at the previous "
                                                            "version."),
) -> None:
    """Publish a validated bundle as the registry's new version (running services reload it), or roll back."""
    from llm4rec.serving.registry import ModelRegistry

    reg = ModelRegistry(registry)
    if rollback:
        if bundle is not None:
            raise InputError("--rollback takes no bundle", value=str(bundle), expected="--rollback alone")
        console.print(f"{registry}: now serving {reg.rollback()}")
        return
    if bundle is None:
        raise InputError("which bundle to publish?", expected="llm4rec publish BUNDLE --registry ROOT")
    version = reg.publish(bundle)
    console.print(f"{registry}: published {bundle} as {version}")


def _create_key(store, name: str, scopes: list[str], rate: int | None) -> str:
    import secrets

    from llm4rec.serving.auth import check_scopes, hash_key, new_key

    key = new_key()
    store.add_key("k_" + secrets.token_hex(4), name, hash_key(key), check_scopes(scopes), rate)
    return key


@keys_app.command("create")
def keys_create(
    store: str = typer.Option("llm4rec-events.db", "--store", help=STORE_HELP),
    name: str = typer.Option(..., "--name", help="Whom or what the key is for."),
    scopes: str = typer.Option("read", "--scopes", help="Comma-separated: read, write, admin."),
    rate: int = typer.Option(None, "--rate", min=1, help="Requests per minute (default: unlimited)."),
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from llm4rec.serving.store import EventStore

    s = EventStore(_absolute(store))
    try:
        key = _create_key(s, name, [x.strip() for x in scopes.split(",") if x.strip()], rate)
    finally:
        s.close()
    console.print(key)


@keys_app.command("list")
def keys_list(store: str = typer.Option("llm4rec-events.db", "--store", help=STORE_HELP)) -> None:
    """The keys: id, name, scopes, rate, created, revoked (never the key)."""
    import datetime as dt

    from rich.table import Table

    from llm4rec.serving.store import EventStore

    s = EventStore(_absolute(store))
    try:
        rows = s.list_keys()
    finally:
        s.close()
    table = Table()
    for column in ("id", "name", "scopes", "per minute", "created", "revoked"):
        table.add_column(column)

    def when(t: float | None) -> str:
        return "" if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    for r in rows:
        table.add_row(r["key_id"], r["name"], ",".join(r["scopes"]), str(r["rate_per_minute"] or "-"),
                      when(r["created"]), when(r["revoked"]))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (llm4rec keys list)."),
                store: str = typer.Option("llm4rec-events.db", "--store", help=STORE_HELP)) -> None:
    """Revoke a key (running services stop accepting it within a few seconds)."""
    from llm4rec.serving.store import EventStore

    s = EventStore(_absolute(store))
    try:
        if not s.revoke_key(key_id):
            raise InputError("unknown key id", value=key_id, expected="an id from llm4rec keys list")
    finally:
        s.close()
    console.print(f"revoked {key_id}")


@events_app.command("export")
def events_export(
    out: Path = typer.Option(..., "--out", "-o", help="A .parquet or .csv file to write."),
    store: str = typer.Option("llm4rec-events.db", "--store", help=STORE_HELP),
    what: str = typer.Option("events", "--what", help="events (for retraining) or impressions (shown slates with "
                                                      "propensities and rewards: input for llm4rec ope)."),
    policy: str = typer.Option(None, "--policy", help="With --what impressions: only this policy's slates."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Export the store's events, or its impressions, to Parquet or CSV."""
    from llm4rec.serving.store import EventStore

    if what not in ("events", "impressions"):
        raise InputError("bad --what", value=what, expected="events or impressions")
    s = EventStore(_absolute(store))
    try:
        n = s.export(out, what=what, policy=policy, overwrite=overwrite)
    finally:
        s.close()
    console.print(f"wrote {n} rows to {out}")
