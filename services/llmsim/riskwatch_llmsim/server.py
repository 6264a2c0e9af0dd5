"""The simulator's HTTP face: OpenAI chat completions plus control, stats and health endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any, Self

from aiohttp import web

from riskwatch.clock import SYSTEM_CLOCK, Clock
from riskwatch.errors import PortInUse

from .config import (
    ANONYMOUS_LABEL,
    ConfigPatchError,
    EffectivePolicy,
    SimulatorConfig,
    apply_patch,
    label_for_unknown_token,
)
from .faults import Outcome, draw_outcome, sample_latency_s, spoil_reply
from .limits import Admission, RateLimiter
from .protocol import RequestError, completion_body, error_body, parse_completion_request
from .stats import KeyStats, SimulatorStats
from .verdicts import assess

logger = logging.getLogger(__name__)

# frames as base64 data URIs can be large; OpenAI accepts images up to 20 MB
MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_MODEL_NAME = "llmsim-vision"


class Simulator:
    """The simulated provider's state: configuration, per-key limits, randomness and stats."""

    def __init__(self, config: SimulatorConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self._config = config
        self._limiter = RateLimiter(clock)
        self._stats = SimulatorStats()
        self._rngs: dict[str, random.Random] = {}
        self._policies: dict[str, EffectivePolicy] = {}
        self._labels = _labels_by_token(config)
        self._stopping = asyncio.Event()

    @property
    def config(self) -> SimulatorConfig:
        return self._config

    def reconfigure(self, patch: Mapping[str, Any]) -> SimulatorConfig:
        """Apply a runtime patch (see `apply_patch`); if invalid, raise ConfigPatchError, changing nothing."""
        config = apply_patch(self._config, patch)
        if config.seed != self._config.seed:
            self._rngs.clear()
        self._config = config
        self._policies.clear()
        self._labels = _labels_by_token(config)
        logger.info("llmsim reconfigured: %s", ", ".join(sorted(patch)) or "nothing")
        return config

    def reset(self, *, limits: bool = False) -> None:
        """Zero the stats and reseed the randomness; with `limits`, refill every key's buckets too."""
        self._stats.reset()
        self._rngs.clear()
        if limits:
            self._limiter.reset()

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def begin_shutdown(self) -> None:
        """Release requests hanging in the timeout fault so the server can drain."""
        self._stopping.set()

    async def handle_chat_completion(self, request: web.Request) -> web.Response:
        # read the whole body first: answering while the client is still uploading a large
        # frame would make it see a broken pipe instead of our 401/429
        body = await request.read()
        token = _bearer_token(request.headers.get("Authorization"))
        if token is None:
            label, known = ANONYMOUS_LABEL, False
        else:
            known_label = self._labels.get(token)
            label, known = (known_label, True) if known_label is not None else (label_for_unknown_token(token), False)
        stats = self._stats.key(label)
        self._stats.enter(stats)
        try:
            return await self._serve(body, token, label, known, stats)
        finally:
            self._stats.leave(stats)

    async def _serve(self, body: bytes, token: str | None, label: str, known: bool, stats: KeyStats) -> web.Response:
        config = self._config
        started = time.monotonic()
        if token is None:
            stats.http_401 += 1
            return _unauthorized("You didn't provide an API key in the Authorization header (Bearer).")
        if not known and config.strict_keys:
            stats.http_401 += 1
            return _unauthorized("Incorrect API key provided.")
        policy = self._policy(label)
        if policy.revoked:
            stats.http_401 += 1
            return _unauthorized("This API key has been revoked.")
        admission = self._limiter.try_acquire(label, policy.qps, policy.rpm, config.rate_limit_grace_s)
        if not admission.admitted:
            stats.http_429 += 1
            return _rate_limited(label, admission)
        try:
            parsed = parse_completion_request(body)
        except RequestError as error:
            stats.http_400 += 1
            return _error(error.status, error.message, "invalid_request_error", error.code, error.param)
        if config.models is not None and parsed.model not in config.models:
            stats.http_404 += 1
            return _error(
                404,
                f"The model `{parsed.model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        # draw everything up front so a seeded run depends only on the order requests arrive
        rng = self._rng(label)
        outcome = draw_outcome(rng, policy)
        latency_s = sample_latency_s(rng, policy.latency_median_s, policy.latency_sigma, config.latency_max_s)
        server_status = rng.choice(config.server_error_statuses)
        verdict = assess(parsed.features).as_dict()
        content = (
            spoil_reply(rng, verdict, config.invalid_json_modes)
            if outcome is Outcome.INVALID_JSON
            else json.dumps(verdict)
        )
        if outcome is Outcome.TIMEOUT:
            stats.timeouts += 1
            await self._hang(config.timeout_hang_s)
            return _error(504, "The request timed out.", "server_error", "timeout")
        try:
            await asyncio.sleep(latency_s)
        except asyncio.CancelledError:
            # the client gave up (its own timeout) or the server is stopping
            stats.disconnected += 1
            raise
        headers = _ratelimit_headers(admission)
        headers["openai-processing-ms"] = str(round((time.monotonic() - started) * 1000))
        if outcome is Outcome.SERVER_ERROR:
            stats.http_5xx += 1
            message = (
                "The server is overloaded or not ready yet."
                if server_status == 503
                else "The server had an error while processing your request. Sorry about that!"
            )
            return _error(server_status, message, "server_error", None, headers=headers)
        if outcome is Outcome.INVALID_JSON:
            stats.invalid_json += 1
        else:
            stats.ok += 1
        return _json(200, completion_body(parsed, content), headers)

    async def _hang(self, seconds: float) -> None:
        # ends early when the client hangs up (handler cancelled) or the server stops
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _policy(self, label: str) -> EffectivePolicy:
        policy = self._policies.get(label)
        if policy is None:
            policy = self._policies[label] = self._config.policy_for(label)
        return policy

    def _rng(self, label: str) -> random.Random:
        rng = self._rngs.get(label)
        if rng is None:
            seed = self._config.seed
            # one stream per key, so traffic on one key does not shift another key's draws
            rng = self._rngs[label] = random.Random(f"{seed}:{label}") if seed is not None else random.Random()
        return rng


SIMULATOR_KEY = web.AppKey("llmsim.simulator", Simulator)


def create_app(config: SimulatorConfig, *, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    """The simulator as an aiohttp application.

    When running it with your own runner, pass `handler_cancellation=True` to `web.AppRunner`
    so a request abandoned by its client stops counting as in flight.
    """
    simulator = Simulator(config, clock)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SIMULATOR_KEY] = simulator

    async def chat_completions(request: web.Request) -> web.Response:
        return await simulator.handle_chat_completion(request)

    async def models(_: web.Request) -> web.Response:
        names = simulator.config.models or (DEFAULT_MODEL_NAME,)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "llmsim"} for name in names]
        return _json(200, {"object": "list", "data": data})

    async def healthz(_: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def get_stats(_: web.Request) -> web.Response:
        return _json(200, simulator.stats())

    async def get_config(_: web.Request) -> web.Response:
        return _json(200, simulator.config.public_view())

    async def control(request: web.Request) -> web.Response:
        try:
            patch = await request.json()
            config = simulator.reconfigure(patch)
        except json.JSONDecodeError as error:
            return _error(400, f"The control body is not JSON: {error.msg}.", "invalid_request_error", "invalid_json")
        except ConfigPatchError as error:
            return _error(400, str(error), "invalid_request_error", "invalid_config")
        return _json(200, config.public_view())

    async def reset(request: web.Request) -> web.Response:
        try:
            options: Any = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as error:
            return _error(400, f"The reset body is not JSON: {error.msg}.", "invalid_request_error", "invalid_json")
        limits = bool(options.get("limits", False)) if isinstance(options, dict) else False
        simulator.reset(limits=limits or request.query.get("limits") in ("1", "true"))
        return _json(200, simulator.stats())

    async def on_shutdown(_: web.Application) -> None:
        simulator.begin_shutdown()

    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_stats", get_stats)
    app.router.add_get("/_config", get_config)
    app.router.add_post("/_control", control)
    app.router.add_post("/_reset", reset)
    app.on_shutdown.append(on_shutdown)
    return app


class RunningSimulator:
    """A simulator serving on a real port; `stop()` (or leaving `async with`) shuts it down."""

    def __init__(self, runner: web.AppRunner, simulator: Simulator, host: str, port: int) -> None:
        self._runner = runner
        self.simulator = simulator
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        # a wildcard bind is reachable on loopback; clients cannot connect to 0.0.0.0 everywhere
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as the openai client's base_url."""
        return f"{self.url}/v1"

    @property
    def config(self) -> SimulatorConfig:
        return self.simulator.config

    def stats(self) -> dict[str, Any]:
        return self.simulator.stats()

    def reconfigure(self, patch: Mapping[str, Any]) -> SimulatorConfig:
        return self.simulator.reconfigure(patch)

    def reset(self, *, limits: bool = False) -> None:
        self.simulator.reset(limits=limits)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def start_simulator(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout_s: float = 5.0,
    clock: Clock = SYSTEM_CLOCK,
    port_setting: str = "pass --port to move it",
) -> RunningSimulator:
    """Serve the simulator on host:port (0 = any free port) until `stop()`; PortInUse, naming `port_setting` (what
    moves the port), when it cannot bind."""
    app = create_app(config, clock=clock)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,  # a log line per request would cost more than the simulated work
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise PortInUse("LLM simulator", host, port, port_setting) from exc
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = _bound_port(runner, port)
    return RunningSimulator(runner, app[SIMULATOR_KEY], host, bound_port)


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
            return address[1]
    return requested


def _labels_by_token(config: SimulatorConfig) -> dict[str, str]:
    return {token.get_secret_value(): label for label, token in config.keys.items()}


def _bearer_token(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _ratelimit_headers(admission: Admission) -> dict[str, str]:
    if admission.limit_requests is None:
        return {"x-request-id": f"req_{uuid.uuid4().hex}"}
    return {
        "x-request-id": f"req_{uuid.uuid4().hex}",
        "x-ratelimit-limit-requests": _number(admission.limit_requests),
        "x-ratelimit-remaining-requests": str(admission.remaining_requests),
    }


def _rate_limited(label: str, admission: Admission) -> web.Response:
    wait_s = admission.retry_after_s
    wait_ms = math.ceil(wait_s * 1000)
    headers = _ratelimit_headers(admission)
    # Retry-After is whole seconds by the HTTP spec; retry-after-ms (which the openai client
    # prefers) carries the precise figure for clients that can use it
    headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
    headers["retry-after-ms"] = str(wait_ms)
    headers["x-ratelimit-reset-requests"] = f"{wait_ms}ms"
    message = f"Rate limit reached for requests on key {label}. Please try again in {wait_ms}ms."
    return _error(429, message, "requests", "rate_limit_exceeded", headers=headers)


def _unauthorized(message: str) -> web.Response:
    # never echo any part of the token: the message may end up in the caller's logs
    return _error(401, message, "invalid_request_error", "invalid_api_key")


def _error(
    status: int,
    message: str,
    error_type: str,
    code: str | None,
    param: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return _json(status, error_body(message, error_type=error_type, code=code, param=param), headers)


def _json(status: int, body: Mapping[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"
