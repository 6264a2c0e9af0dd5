"""One risk assessment against the vision LLM: lease a key, call, fail over, repair a bad reply once."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx2
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client import REGISTRY, CollectorRegistry

from riskwatch.domain import FailureKind

from .keypool import DeadlineExceeded, KeyPool, NoUsableKeys, Outcome
from .keys_config import ApiKeyConfig, ApiKeysConfig
from .prompt import InvalidReply, LlmVerdict, PromptBook, build_messages, build_repair_messages, parse_reply

log = logging.getLogger(__name__)

# A Retry-After beyond this is treated as this long: the key rests, but is not lost for good on one header.
MAX_RETRY_AFTER_S = 3600.0
_ERROR_TEXT_CHARS = 300
_DEADLINE_SLACK_S = 0.005

ClientFactory = Callable[[str, str, float], AsyncOpenAI]
"""Builds the client for (base_url, api_key secret, default timeout)."""


@dataclass(frozen=True, slots=True)
class AssessmentFailure:
    kind: FailureKind
    message: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """The result of one assessment: a verdict, or a typed failure; never a key's secret."""

    verdict: LlmVerdict | None
    failure: AssessmentFailure | None
    key_id: str | None  # the key of the last call made
    model: str | None
    latency_s: float  # duration of the last LLM call
    elapsed_s: float  # the whole assessment: waiting for keys, failed calls and the repair retry
    attempts: int  # LLM calls made

    @property
    def ok(self) -> bool:
        return self.verdict is not None

    @property
    def failure_kind(self) -> FailureKind | None:
        return self.failure.kind if self.failure is not None else None

    @property
    def failure_message(self) -> str | None:
        return self.failure.message if self.failure is not None else None


def default_client_factory(base_url: str, api_key: str, timeout_s: float) -> AsyncOpenAI:
    """The official async client on the aiohttp transport; the pool, not the client, retries."""
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=timeout_s,
        http_client=DefaultAioHttpClient(timeout=timeout_s),
    )


@dataclass(slots=True)
class _Target:
    base_url: str
    model: str
    client: AsyncOpenAI | None = None


@dataclass(frozen=True, slots=True)
class _CallError:
    outcome: Outcome
    message: str
    retryable: bool


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if absent."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value) * scale
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
        if math.isnan(delay):
            continue
        return min(max(delay, 0.0), MAX_RETRY_AFTER_S)
    return None


class LlmClient:
    """Runs assessments with the key pool: one reused client per key, failover, one repair retry."""

    def __init__(
        self,
        config: ApiKeysConfig,
        pool: KeyPool,
        *,
        prompts: PromptBook | None = None,
        client_factory: ClientFactory = default_client_factory,
        temperature: float = 0.0,
        max_tokens: int | None = 400,
        json_mode: bool = False,
    ) -> None:
        self._pool = pool
        self._prompts = prompts or PromptBook()
        self._client_factory = client_factory
        self._request_timeout_s = config.request_timeout_s
        # The request fields besides model and messages, as the chat-completions API names them.
        self._request_fields: dict[str, object] = {"temperature": temperature}
        if max_tokens is not None:
            self._request_fields["max_tokens"] = max_tokens
        if json_mode:
            # Some OpenAI-compatible servers reject response_format, so asking for JSON mode is opt-in.
            self._request_fields["response_format"] = {"type": "json_object"}
        self._keys: dict[str, ApiKeyConfig] = {k.id: k for k in config.keys}
        self._targets = {k.id: _Target(config.base_url_for(k), config.model_for(k)) for k in config.keys}
        missing = set(pool.key_ids) - set(self._targets)
        if missing:
            raise ValueError(f"the pool has keys the configuration does not: {sorted(missing)}")
        self._secrets = tuple(k.api_key.get_secret_value() for k in config.keys)
        self._stopping = False
        # Assessments waiting for a key (cooldowns, limits): handed back at once when the client stops.
        self._waiting: set[asyncio.Task[object]] = set()

    def _client(self, key_id: str) -> tuple[AsyncOpenAI, str]:
        target = self._targets[key_id]
        if target.client is None:
            # Built once per key, on first use inside the running loop (aiohttp wants one).
            secret = self._keys[key_id].api_key.get_secret_value()
            target.client = self._client_factory(target.base_url, secret, self._request_timeout_s)
        return target.client, target.model

    @classmethod
    def from_config(
        cls,
        config: ApiKeysConfig,
        *,
        prompts: PromptBook | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> LlmClient:
        """A client with its own key pool on the real clock."""
        return cls(config, KeyPool.from_config(config, registry=registry), prompts=prompts)

    @property
    def pool(self) -> KeyPool:
        return self._pool

    async def assess(
        self, *, camera_id: str, features: Mapping[str, object], crop_jpeg: bytes, deadline: float
    ) -> Assessment:
        """Assess one group with the camera's prompt before `deadline` (a time on the pool's clock)."""
        messages = build_messages(self._prompts.for_camera(camera_id), features, crop_jpeg)
        return await self.assess_messages(messages, deadline=deadline)

    async def assess_messages(self, messages: Sequence[ChatCompletionMessageParam], *, deadline: float) -> Assessment:
        """Send a prepared request until a valid verdict or `deadline`; never raises for LLM/key trouble."""
        clock = self._pool.clock
        started = clock.now()
        attempts = 0
        repaired = False
        avoid: frozenset[str] = frozenset()
        key_id: str | None = None
        model: str | None = None
        latency = 0.0
        last_error: str | None = None

        def failure(kind: FailureKind, message: str) -> Assessment:
            if last_error is not None and kind != "llm_error":
                message = f"{message}; last error: {last_error}"
            elapsed = clock.now() - started
            failed = AssessmentFailure(kind, message)
            return Assessment(None, failed, key_id, model, latency, elapsed, attempts)

        while True:
            if self._stopping:
                raise asyncio.CancelledError("the LLM client is stopping: the task is handed back")
            waiting = asyncio.current_task()
            if waiting is not None:
                self._waiting.add(waiting)
            try:
                lease = await self._pool.acquire(deadline, avoid)
            except DeadlineExceeded as error:
                return failure(FailureKind.DEADLINE_EXCEEDED, str(error))
            except NoUsableKeys as error:
                return failure(FailureKind.NO_USABLE_KEYS, str(error))
            finally:
                if waiting is not None:
                    self._waiting.discard(waiting)
            key_id = lease.key_id
            client, model = self._client(key_id)
            attempts += 1
            call_started = clock.now()
            remaining = deadline - call_started
            timeout = min(self._request_timeout_s, remaining)
            try:
                # The HTTP timeouts apply per read; this bounds the whole call, however the body trickles in.
                async with asyncio.timeout(timeout):
                    # The client's raw `post` keeps its auth, base URL and typed errors but skips re-validating
                    # our already well-formed request and building response models: half its CPU per call.
                    response = await client.post(
                        "/chat/completions",
                        body={"model": model, "messages": messages, **self._request_fields},
                        cast_to=httpx2.Response,
                        options={"timeout": timeout},
                    )
                    body = response.content
            except (openai.OpenAIError, TimeoutError, httpx2.HTTPError) as error:
                now = clock.now()
                latency = now - call_started
                # Timing out because the task's deadline came is not the key's fault; its own timeout is.
                cut_by_deadline = remaining < self._request_timeout_s and now >= deadline - _DEADLINE_SLACK_S
                call_error = self._classify(error, cut_by_deadline=cut_by_deadline)
                self._pool.release(lease, call_error.outcome)
                last_error = f"{key_id}: {call_error.message}"
                if not call_error.retryable:
                    return failure(FailureKind.LLM_ERROR, last_error)
                avoid = frozenset({key_id})
                continue
            except asyncio.CancelledError:
                self._pool.release(lease, Outcome.abandoned())
                raise
            except BaseException:
                self._pool.release(lease, Outcome.other_error())
                raise
            latency = clock.now() - call_started
            reply = _reply_text(body)
            if reply is None:
                self._pool.release(lease, Outcome.server_error())
                last_error = f"{key_id}: the response is not a chat completion"
                avoid = frozenset({key_id})
                continue
            avoid = frozenset()
            try:
                verdict = parse_reply(reply, risk_types=self._prompts.risk_types)
            except InvalidReply as error:
                # The key answered, so it is not cooled; but the call failed, and its success rate says so.
                self._pool.release(lease, Outcome.invalid_reply())
                if repaired:
                    return failure(FailureKind.INVALID_REPLY, f"{key_id}: {error} (after one repair attempt)")
                repaired = True
                last_error = f"{key_id}: {error}"
                messages = build_repair_messages(messages, reply, str(error))
                continue
            self._pool.release(lease, Outcome.success())
            return Assessment(verdict, None, key_id, model, latency, clock.now() - started, attempts)

    def stop_assessing(self) -> int:
        """Hand back (cancel) every assessment waiting for a key, and every later one before its next call.

        Calls in flight end on their own (bounded by the stage's drain); their task is handed back too if the call
        fails. A handed-back task is never answered, so its record stays uncommitted and is redelivered. Returns how
        many assessments were waiting.
        """
        self._stopping = True
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel("the LLM client is stopping: the task is handed back")
        return len(waiting)

    def _classify(
        self,
        error: openai.OpenAIError | TimeoutError | httpx2.HTTPError,
        *,
        cut_by_deadline: bool,
    ) -> _CallError:
        if isinstance(error, openai.APITimeoutError | TimeoutError):
            # A call we cut short at the task's deadline says nothing about the key.
            outcome = Outcome.abandoned() if cut_by_deadline else Outcome.timeout()
            return _CallError(outcome, "the request timed out", retryable=True)
        if isinstance(error, openai.APIConnectionError | httpx2.HTTPError):
            return _CallError(Outcome.server_error(), "connection error", retryable=True)
        if isinstance(error, openai.RateLimitError):
            wait = retry_after_s(error.response.headers)
            hint = f", retry after {wait:.3g} s" if wait is not None else ""
            return _CallError(Outcome.rate_limited(wait), f"HTTP 429 rate limited{hint}", retryable=True)
        if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
            # The provider's text may quote part of the key, so only the status is kept.
            return _CallError(Outcome.auth_error(), f"HTTP {error.status_code}: key rejected", retryable=True)
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            if status >= 500:
                return _CallError(Outcome.server_error(), f"HTTP {status} server error", retryable=True)
            if status == 408:
                return _CallError(Outcome.timeout(), "HTTP 408 request timeout", retryable=True)
            return _CallError(
                Outcome.other_error(), f"HTTP {status}: {self._error_text(error.message)}", retryable=False
            )
        if isinstance(error, openai.APIResponseValidationError):
            return _CallError(Outcome.server_error(), "malformed response from the API", retryable=True)
        return _CallError(Outcome.other_error(), self._error_text(str(error)), retryable=False)

    def _error_text(self, text: str) -> str:
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text if len(text) <= _ERROR_TEXT_CHARS else text[:_ERROR_TEXT_CHARS] + " …"

    async def close(self) -> None:
        """Close every client and its connections (the pool is not closed: it may be shared)."""
        for key_id, target in self._targets.items():
            client, target.client = target.client, None
            if client is None:
                continue
            try:
                await client.close()
            except (OSError, openai.OpenAIError) as error:
                log.warning("closing the LLM client of key %s failed: %s", key_id, type(error).__name__)


def _reply_text(body: bytes) -> str | None:
    """The first choice's text ("" if it has none); None when the response is no chat completion at all.

    A 200 may carry anything (a proxy's error page, any JSON, bytes that are not UTF-8, nesting deep enough to
    exhaust the stack), so nothing is assumed.
    """
    try:
        completion = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list):
        return None
    if not choices:
        return ""
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""
