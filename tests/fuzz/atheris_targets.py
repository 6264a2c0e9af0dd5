"""Coverage-guided fuzzing (atheris/libFuzzer) of the parsers of outside input; `make fuzz` runs each target.

    uv run python tests/fuzz/atheris_targets.py TARGET [libFuzzer flags, e.g. -max_total_time=60] [CORPUS_DIR]

Targets: frame, records, reply, llmsim, config, api-keys. Each accepts only the parser's documented typed
error; anything else is a crash that libFuzzer reports with the input saved as crash-<sha1>.
"""

# Seeds import what they need only for the target being run.
# ruff: noqa: PLC0415

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # cv2 logs every undecodable image otherwise

with atheris.instrument_imports():
    import riskwatch.config.loader as config_loader
    import riskwatch_llmsim.protocol as llmsim_protocol
    from riskwatch import imaging
    from riskwatch_gateway import access, grpcweb
    from riskwatch_scheduler import keys_config, prompt, scheduler, taskgen

from riskwatch.bus import Record
from riskwatch.config.settings import CommonSettings
from riskwatch.errors import ConfigError, DecodeError, InvalidFrame

SECRET = "sk-fuzz-S3CR3T-7f3a9c0e5b1d"
_WORK = Path(tempfile.mkdtemp(prefix="rw-atheris-"))


def frame(data: bytes) -> None:
    try:
        image = imaging.decode_image(data, max_bytes=2_000_000, max_pixels=1_000_000)
    except InvalidFrame:
        return
    assert image.shape[0] * image.shape[1] <= 1_000_000


def records(data: bytes) -> None:
    record = Record("fuzz", 0, 0, b"cam", data)
    for decode in (taskgen.decode_detection_event, taskgen.decode_result, scheduler.decode_task):
        try:
            decode(record)
        except DecodeError as exc:
            assert "fuzz[0]@0" in str(exc)


_VERDICT = json.dumps(
    {"risk_level": "low", "risk_types": ["crowding"], "description": "d", "confidence": 0.5, "involved_track_ids": [1]}
)


def reply(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    text = provider.ConsumeUnicodeNoSurrogates(len(data))
    with contextlib.suppress(prompt.InvalidReply):
        prompt.parse_reply(text)
    # Lenient about what surrounds a verdict: prose with no `}` before it, any prose after it, a think block
    # before it never hide it (think tags only where a model puts them).
    cut = len(text) // 2
    before = text[:cut].replace("}", "").replace("<", "")
    after = text.replace("<", "")
    thought = text[cut:].replace("</", "")
    for wrapped in (f"{before}{_VERDICT}{after}", f"<think>{thought}</think>{before}{_VERDICT}"):
        if len(wrapped) <= prompt.MAX_REPLY_CHARS and wrapped.count("{") < prompt.MAX_OBJECT_CANDIDATES:
            assert prompt.parse_reply(wrapped).risk_types == ("crowding",), wrapped


def llmsim(data: bytes) -> None:
    try:
        llmsim_protocol.parse_completion_request(data)
    except llmsim_protocol.RequestError as exc:
        assert exc.status == 400


def config(data: bytes) -> None:
    path = _WORK / "kafka.yaml"
    path.write_bytes(data)
    try:
        config_loader.load_settings(CommonSettings, _WORK)
    except ConfigError as exc:
        assert str(path) in str(exc), str(exc)


def api_keys(data: bytes) -> None:
    path = _WORK / "api_keys.yaml"
    # The secret is spliced in where the input says `SECRET`, so mutations move it around the file.
    path.write_bytes(data.replace(b"SECRET", SECRET.encode()))
    try:
        keys_config.load_api_keys(path, environ={"RW_FUZZ_KEY": SECRET})
    except keys_config.ApiKeysConfigError as exc:
        assert str(exc).startswith(f"{path}: ") and "S3CR3T" not in str(exc), str(exc)


def grpc_web(data: bytes) -> None:
    """A gRPC-web text body and its headers: decoded or ValueError, and a well-formed body decodes to its bytes."""
    with contextlib.suppress(ValueError):
        grpcweb.decode_text(data)
    assert grpcweb.decode_text(base64.b64encode(data)) == data
    header = data.decode("latin-1")
    with contextlib.suppress(ValueError):
        timeout = grpcweb.parse_timeout(header)
        assert timeout is not None and 0 <= timeout <= 99_999_999 * 3600
    token = access.bearer_token(header)
    assert token is None or header.lower().startswith("bearer")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frame": frame,
    "records": records,
    "reply": reply,
    "llmsim": llmsim,
    "config": config,
    "api-keys": api_keys,
    "grpcweb": grpc_web,
}


def seeds(name: str) -> list[bytes]:
    """Valid inputs to start from, so mutations begin inside the parser rather than at its first check."""
    repo = Path(__file__).resolve().parents[2]
    if name == "frame":
        from riskwatch_detector.testing import scene_png

        png = scene_png(1, 64, 48)
        image = imaging.decode_image(png, max_bytes=10**6, max_pixels=10**6)
        return [png, imaging.encode_jpeg(image, 80)]
    if name == "records":
        from riskwatch import events
        from riskwatch.v1 import events_pb2

        return [
            events_pb2.DetectionEvent(
                event_id="c:1", camera_id="c", capture_time=events.timestamp(), groups=[events_pb2.Group(group_id="g")]
            ).SerializeToString(),
            events_pb2.AssessmentTask(task_id="t", camera_id="c", group_id="g").SerializeToString(),
        ]
    if name == "reply":
        verdict = (
            b'{"risk_level": "low", "risk_types": [], "description": "d", "confidence": 0.5, "involved_track_ids": []}'
        )
        return [
            verdict,
            b"<think>the car {is} close</think>\nSure: ```json\n" + verdict + b"\n``` done",
            verdict.replace(b"[]}", b"[9223372036854775808]}"),
        ]
    if name == "llmsim":
        from riskwatch_llmsim.testing import chat_request, sample_features

        return [json.dumps(chat_request(sample_features())).encode()]
    if name == "grpcweb":
        return [base64.b64encode(b"\x00\x00\x00\x00\x02hi") * 2, b"5S", b"Bearer abc"]
    if name == "config":
        return [(repo / "config" / "kafka.yaml").read_bytes()]
    text = (repo / "config" / "api_keys.yaml").read_bytes()
    return [text, b"keys:\n  - id: a\n    api_key: SECRET\n    qps_limit: 1\n    rpm_limit: 60\n"]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus dir]")
    name, args = sys.argv[1], sys.argv[2:]
    corpus = [Path(a) for a in args if not a.startswith("-")]
    if corpus and corpus[0].is_dir() and not any(corpus[0].iterdir()):
        for i, seed in enumerate(seeds(name)):
            (corpus[0] / f"seed-{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], *args], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
