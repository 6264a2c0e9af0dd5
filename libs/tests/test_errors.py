"""One table of statuses: the same error reads the same on gRPC and HTTP, and a bug never leaks its text."""

from __future__ import annotations

from http import HTTPStatus

import grpc
import pytest

from riskwatch import errors


@pytest.mark.parametrize(
    ("error", "code", "http"),
    [
        (errors.InvalidFrame("corrupt JPEG"), grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.BAD_REQUEST),
        (errors.InvalidRequest("fps must be > 0"), grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.BAD_REQUEST),
        (errors.UnknownCamera("cam-9"), grpc.StatusCode.NOT_FOUND, HTTPStatus.NOT_FOUND),
        (errors.CameraExists("cam-1"), grpc.StatusCode.ALREADY_EXISTS, HTTPStatus.CONFLICT),
        (errors.FrameDropped("newer frame"), grpc.StatusCode.RESOURCE_EXHAUSTED, HTTPStatus.TOO_MANY_REQUESTS),
        (errors.Unavailable("redis down"), grpc.StatusCode.UNAVAILABLE, HTTPStatus.SERVICE_UNAVAILABLE),
    ],
)
def test_each_error_has_one_status_per_protocol(
    error: errors.RiskwatchError, code: grpc.StatusCode, http: HTTPStatus
) -> None:
    assert errors.grpc_status(error) == code
    assert errors.http_status(error) == http
    assert errors.client_message(error) == str(error)


def test_a_bug_is_internal_and_its_text_stays_on_the_server() -> None:
    bug = KeyError("/etc/secret-path")
    assert errors.grpc_status(bug) == grpc.StatusCode.INTERNAL
    assert errors.http_status(bug) == HTTPStatus.INTERNAL_SERVER_ERROR
    assert "secret" not in errors.client_message(bug)
