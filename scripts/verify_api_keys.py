"""Make one minimal vision call with every key in the LLM scheduler's key file and print a table; never prints a key.

The file is the one the scheduler reads (ALGO_API_KEYS_FILE, relative to --config-dir) unless --file names another.

Exit status: 0 when at least --min-working keys answer (default 3), 1 otherwise, 2 for an invalid key file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import openai

from riskwatch.config import load_settings
from riskwatch.domain import GroupFeatures, PromptFeatures
from riskwatch.errors import ConfigError
from riskwatch_scheduler.config import SchedulerSettings
from riskwatch_scheduler.keys_config import ApiKeyConfig, ApiKeysConfig, load_api_keys
from riskwatch_scheduler.llm_client import default_client_factory
from riskwatch_scheduler.prompt import DEFAULT_PROMPT, InvalidReply, build_messages, parse_reply

FEATURES = PromptFeatures(
    camera_id="verify",
    group_id="verify",
    member_track_ids=(1, 2),
    features=GroupFeatures(vehicles=1, pedestrians=1, min_ped_vehicle_distance=2.0, density=0.5, min_spacing=2.0),
).to_dict()


def tiny_jpeg() -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    return data.tobytes()


async def check(config: ApiKeysConfig, key: ApiKeyConfig, timeout_s: float) -> tuple[str, str, float]:
    """(status, detail, latency) for one key; the detail never contains the provider's text (it may quote keys)."""
    if not key.enabled:
        return "skipped", "disabled in the file", 0.0
    client = default_client_factory(config.base_url_for(key), key.api_key.get_secret_value(), timeout_s)
    started = time.monotonic()
    try:
        completion = await client.chat.completions.create(
            model=config.model_for(key),
            messages=build_messages(DEFAULT_PROMPT, FEATURES, tiny_jpeg()),
            max_tokens=200,
            temperature=0.0,
        )
        latency = time.monotonic() - started
        reply = completion.choices[0].message.content or ""
        try:
            parse_reply(reply)
            return "ok", f"model {config.model_for(key)}", latency
        except InvalidReply:
            return "ok", "answered, but not with the JSON verdict the prompt asks for", latency
    except openai.APIStatusError as exc:
        return "error", f"HTTP {exc.status_code}", time.monotonic() - started
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        return "error", type(exc).__name__, time.monotonic() - started
    finally:
        await client.close()


async def verify(config: ApiKeysConfig, timeout_s: float) -> list[tuple[str, str, str, float]]:
    results = await asyncio.gather(*(check(config, key, timeout_s) for key in config.keys))
    return [(key.id, *result) for key, result in zip(config.keys, results, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", type=Path, default=None, help="directory of the YAML files (default: config)")
    parser.add_argument("--file", type=Path, default=None, help="key file (default: the scheduler's api_keys_file)")
    parser.add_argument("--min-working", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    args = parser.parse_args()
    try:
        config = load_api_keys(args.file or load_settings(SchedulerSettings, args.config_dir).api_keys_file)
    except ConfigError as exc:
        print(f"invalid key file:\n{exc}", file=sys.stderr)
        return 2
    rows = asyncio.run(verify(config, args.timeout))
    print(f"{'key id':<16} {'result':<8} {'latency':>8}  detail")
    for key_id, status, detail, latency in rows:
        print(f"{key_id:<16} {status:<8} {latency:>7.2f}s  {detail}")
    working = sum(status == "ok" for _, status, _, _ in rows)
    print(f"{working} of {len(rows)} keys work (need at least {args.min_working})")
    return 0 if working >= args.min_working else 1


if __name__ == "__main__":
    raise SystemExit(main())
