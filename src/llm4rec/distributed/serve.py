"""The recommendation service on Ray Serve: ``llm4rec serve --ray ADDRESS --replicas N [--max-replicas M]``.

Every replica runs the **same** FastAPI app as ``llm4rec serve`` (the app
factory :func:`llm4rec.serving.create_app`, built inside the replica from the
settings handed to it as JSON, lifespan included: the model is loaded and the
registry watched before the replica takes traffic). Nothing is shared through
the replicas' memory: they share what the processes of ``llm4rec serve
--workers N`` share, the event store (PostgreSQL by URL; a SQLite file only
where every node sees the same file) and the model registry (a directory every
node can read at the same path: a shared file system, or one machine). A
feedback event posted to any replica is in the one store, and counts at once
in every replica's live histories.

HTTP: Serve's proxy listens on ``host:port`` (loopback by default; one proxy
on the head node) and routes ``/`` to the replicas, which answer with the
header ``X-Llm4rec-Replica`` (the replica's id; for tests and load balancing
checks). ``/readyz``, ``/metrics`` and every ``/v1`` route behave as in the
single-process service (``/metrics`` is per replica: the one that answered).

Scaling: a fixed number of replicas, or with ``max_replicas`` Serve's
autoscaler between ``replicas`` and ``max_replicas`` on queue length: it adds
replicas while the requests queued or running per replica stay above
``target_ongoing_requests``, and removes them when they stay below.

Rollout without downtime, two ways, both without a failed request:

- **A new model version** (``llm4rec publish`` or ``ModelRegistry.activate`` /
  ``rollback``): nothing is redeployed. Each replica's watcher sees the
  registry's new current version within ``settings.reload_interval`` seconds,
  loads it beside the one it serves and swaps it in; requests in flight finish
  on the old one, and a version that fails to load is refused while the old
  one keeps serving, exactly as in the single-process service. For up to one
  reload interval the replicas may disagree on the version (each answer names
  its ``model_version``).
- **New service settings or new code** (:func:`deploy` again with other
  settings or options): Serve's rolling update starts replicas of the new
  deployment version and drains old ones one at a time (at most 20% of them
  stop together; a stopping replica first leaves the routing table, then
  finishes what it holds, within ``graceful_shutdown_timeout_s``). With
  ``max_surge_percent`` 0 (the default, which needs no spare CPU) an old
  replica stops before its successor starts, so capacity dips by one replica
  meanwhile; a positive value starts successors first.

Faults: a replica that dies (its process or its node) fails only the requests
it held; the router drops it on the first error and the controller starts a
replacement (its health is checked every ``health_check_period_s``). A client
that retries a failed request once sees no failure (``tests/distributed``).
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm4rec.distributed.cluster import require_ray, worker_env
from llm4rec.errors import InputError
from llm4rec.serving.settings import ServiceSettings

require_ray()

from ray import serve  # noqa: E402 - after the check that says how to install it

__all__ = ["APP_NAME", "DEPLOYMENT_NAME", "REPLICA_HEADER", "ServeOptions", "application", "deploy",
           "replica_actors", "replica_tag", "run_until_interrupted", "running_replicas", "shutdown"]

#: the Serve application's name and its one deployment's name
APP_NAME = "llm4rec"
DEPLOYMENT_NAME = "Recommendations"
#: response header naming the replica that answered
REPLICA_HEADER = "x-llm4rec-replica"
#: Ray's namespace of Serve's actors, and the name prefix of replica actors
_SERVE_NAMESPACE = "serve"
_REPLICA_PREFIX = "SERVE_REPLICA::"


class ServeOptions(BaseModel):
    """How the service runs on Ray Serve (the service's own settings stay in ``ServiceSettings``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(2, ge=1, description="Replicas (with max_replicas: the fewest, and the first started).")
    max_replicas: int | None = Field(None, ge=1, description="Scale on queue length up to this many replicas; "
                                                             "None: a fixed number.")
    target_ongoing_requests: float = Field(2.0, gt=0, description="Autoscaling target: requests queued or running "
                                                                  "per replica.")
    max_ongoing_requests: int = Field(32, ge=1, description="Requests one replica holds at once; more wait in "
                                                            "the proxy.")
    replica_cpus: float = Field(1.0, gt=0, description="CPUs reserved per replica.")
    host: str = Field("127.0.0.1", description="Interface of Serve's HTTP proxy.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of Serve's HTTP proxy.")
    proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        "HeadOnly", description="One proxy on the head node, or one on every node with a replica (then "
                                "every node listens on host:port).")
    health_check_period_s: float = Field(2.0, gt=0, description="Seconds between health checks of a replica.")
    graceful_shutdown_timeout_s: float = Field(20.0, ge=0, description="Seconds a stopping replica gets to "
                                                                       "finish the requests it holds.")
    max_surge_percent: int = Field(0, ge=0, le=100, description="Extra replicas (percent of replicas) a rolling "
                                                                "update may start before old ones stop; 0: "
                                                                "stop one, then start its successor (no spare "
                                                                "CPUs needed).")
    upscale_delay_s: float = Field(5.0, ge=0, description="Seconds of high load before a replica is added.")
    downscale_delay_s: float = Field(60.0, ge=0, description="Seconds of low load before a replica is removed.")

    @classmethod
    def make(cls, **values: Any) -> ServeOptions:
        """Validated options; a bad value is an InputError naming the option."""
        try:
            options = cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "?"
            raise InputError(f"bad Ray Serve option {key!r}: {err['msg']}", value=err.get("input"),
                             expected=f"a valid {key}") from None
        if options.max_replicas is not None and options.max_replicas < options.replicas:
            raise InputError("max_replicas is below replicas", value=options.max_replicas,
                             expected=f">= replicas ({options.replicas})")
        return options

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def deployment_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Deployment.options`` these options stand for."""
        out: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": self.health_check_period_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "max_surge_percent": self.max_surge_percent,
            "ray_actor_options": {"num_cpus": self.replica_cpus, "runtime_env": {"env_vars": worker_env()}},
        }
        if self.max_replicas is None or self.max_replicas == self.replicas:
            out["num_replicas"] = self.replicas
        else:
            out["autoscaling_config"] = {
                "min_replicas": self.replicas, "initial_replicas": self.replicas,
                "max_replicas": self.max_replicas, "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s}
        return out


class _ReplicaHeader:
    """ASGI middleware: every HTTP answer names the replica that gave it."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app, self.header = app, (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, sending)


@serve.ingress()
class Recommendations:
    """One replica: the service's FastAPI app, built here from the settings (JSON) the deployment was given."""

    def __init__(self, settings_json: str) -> None:
        self._settings = ServiceSettings.make(**json.loads(settings_json))

    def __serve_build_asgi_app__(self) -> Any:
        from llm4rec.serving.app import create_app

        app = create_app(self._settings)
        app.add_middleware(_ReplicaHeader, replica=serve.get_replica_context().replica_tag)
        return app

    def check_health(self) -> None:
        """Serve's health check: the replica has a model loaded (raises otherwise, and Serve replaces it)."""
        app = getattr(self, "_asgi_app", None)
        if app is not None and not app.state.service.ready:
            raise RuntimeError("no model loaded")


def application(settings: ServiceSettings, options: ServeOptions) -> Any:
    """The Serve application (``Deployment.bind()``) for these settings and options."""
    deployment = serve.deployment(Recommendations, name=DEPLOYMENT_NAME)
    return deployment.options(**options.deployment_options()).bind(settings.model_dump_json())


def _check_settings(settings: ServiceSettings) -> None:
    """Fail here, naming what is wrong, rather than in every replica (Serve would retry them for minutes)."""
    from llm4rec.serving.registry import ModelRegistry
    from llm4rec.serving.store import EventStore

    model = settings.model
    if not model.is_absolute():
        raise InputError("replicas need the model's absolute path", path=model, expected="an absolute path that "
                                                                                         "every node can read")
    if (model / "CURRENT.json").is_file() or (model / "versions").is_dir():
        if ModelRegistry(model).current() is None:
            raise InputError("the model registry has no published version", path=model,
                             expected="llm4rec publish BUNDLE --registry " + str(model))
    elif not (model / "bundle.json").is_file():
        raise InputError("no model there", path=model, expected="a registry (llm4rec publish) or a saved bundle")
    EventStore(settings.store).close()  # reachable, and its tables made once, before replicas race to make them


def deploy(settings: ServiceSettings, options: ServeOptions | None = None) -> str:
    """Run (or update: a rolling update) the service on the connected Ray cluster; its base URL once every
    replica is ready.

    Serve's HTTP proxy is started on ``options.host:options.port`` if Serve is not running yet; if it is, its
    proxy keeps the address it was started with, and a different one is an InputError.
    """
    options = options or ServeOptions()
    _check_settings(settings)
    serve.start(proxy_location=options.proxy_location, http_options={"host": options.host, "port": options.port})
    try:  # Serve only warns when it already runs with its proxy elsewhere
        http = serve.context._get_global_client().http_config
    except AttributeError:  # a Ray without this (private) accessor: trust the request
        http = None
    if http is not None and (http.host, http.port) != (options.host, options.port):
        raise InputError("Ray Serve already runs on this cluster with its proxy elsewhere",
                         value=f"{options.host}:{options.port}", expected=f"{http.host}:{http.port} (or "
                                                                             "`serve shutdown` first)")
    try:
        serve.run(application(settings, options), name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as exc:
        raise InputError(f"the service did not start on Ray Serve ({str(exc).splitlines()[0]})",
                         expected="replicas that load the model and reach the store (see the replica logs "
                                  "under /tmp/ray/session_latest/logs/serve)") from None
    return options.url


def replica_actors() -> list[str]:
    """The names of the service's live replica actors (namespace ``serve``; ``ray.get_actor(name, "serve")``)."""
    import ray

    prefix = f"{_REPLICA_PREFIX}{APP_NAME}#{DEPLOYMENT_NAME}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == _SERVE_NAMESPACE and a["name"].startswith(prefix))


def replica_tag(actor_name: str) -> str:
    """The replica id in ``actor_name`` (what the ``X-Llm4rec-Replica`` header says)."""
    return actor_name.rsplit("#", 1)[-1]


def running_replicas() -> int:
    """Replicas of the service in state RUNNING (0 when it is not deployed)."""
    app = serve.status().applications.get(APP_NAME)
    if app is None or DEPLOYMENT_NAME not in app.deployments:
        return 0
    return int(app.deployments[DEPLOYMENT_NAME].replica_states.get("RUNNING", 0))


def shutdown() -> None:
    """Delete the service; stop Serve too when no other application runs on it."""
    serve.delete(APP_NAME)
    if not serve.status().applications:
        serve.shutdown()


def run_until_interrupted(settings: ServiceSettings, options: ServeOptions, *, echo: Any = print) -> None:
    """:func:`deploy`, then wait until Ctrl-C (or SIGTERM), then :func:`shutdown`."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # both signals, as uvicorn does (a shell starts background jobs with SIGINT ignored)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = deploy(settings, options)
        echo(f"serving on Ray Serve at {url} with {running_replicas()} replicas (Ctrl-C stops)")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        echo("stopping: the service's replicas drain and stop")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutdown()
