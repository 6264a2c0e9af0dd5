"""The dashboard in headless Chromium: a camera tile shows the frame with boxes, a group turns the colour of
its risk after a verdict, alerts and health appear; tracks have trails and speeds, a conflict its TTC line, and a
provisional alert is marked until a verdict resolves it. Saves screenshots to test-artifacts/."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright

from riskwatch.cache import InMemoryCache, keys
from riskwatch.events import timestamp
from riskwatch.v1 import detector_pb2, events_pb2
from riskwatch_gateway.app import GatewayApp
from riskwatch_gateway.config import CameraConfig
from riskwatch_gateway.testing import (
    FakeDetector,
    GatewayFactory,
    make_settings,
    near_miss_event,
    publish_alert,
    publish_state,
    risk_state,
)

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_PRESENT = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_PRESENT:
        pytest.fail("chromium is needed for the dashboard test (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


def street_frame() -> bytes:
    """A 320×240 picture with a 'pedestrian' and a 'car' where the fake detector reports them."""
    image = np.full((240, 320, 3), (90, 90, 90), np.uint8)
    cv2.rectangle(image, (0, 150), (320, 240), (60, 60, 60), -1)
    cv2.rectangle(image, (14, 24), (36, 96), (200, 170, 120), -1)
    cv2.rectangle(image, (54, 44), (146, 106), (40, 40, 160), -1)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


async def pixel(page: Page, x: int, y: int) -> list[int]:
    rgba: list[int] = await page.evaluate(
        """([x, y]) => Array.from(document.querySelector('[data-camera="cam-01"] canvas.frame')
             .getContext('2d').getImageData(x, y, 1, 1).data)""",
        [x, y],
    )
    return rgba


async def open_dashboard(browser: Browser, gateway: GatewayApp) -> tuple[Page, list[str]]:
    """The dashboard in a new page, and the page's script errors as they happen."""
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://127.0.0.1:{gateway.http_port}/")
    return page, errors


async def show_a_street_frame(page: Page, gateway: GatewayApp) -> Locator:
    """cam-01's tile once the dashboard is connected and shows one pushed frame with its two detections."""
    await page.wait_for_selector('#connection[data-state="online"]', timeout=10_000)
    tile = page.locator('[data-camera="cam-01"]')
    await tile.wait_for(timeout=10_000)
    frame = detector_pb2.Frame(camera_id="cam-01", frame_id=1, capture_time=timestamp(), image=street_frame())
    await gateway.cameras.get("cam-01").push(frame)
    await page.wait_for_selector('[data-camera="cam-01"][data-boxes="2"]', timeout=10_000)
    return tile


async def test_dashboard_shows_boxes_and_risk_colours(
    browser: Browser, gateway: GatewayApp, cache: InMemoryCache
) -> None:
    page, errors = await open_dashboard(browser, gateway)
    tile = await show_a_street_frame(page, gateway)
    assert json.loads(await tile.get_attribute("data-groups") or "{}") == {"g1": "unspecified"}

    # The aggregator records a verdict: an alert, then the new state.
    alert = events_pb2.AssessmentResult(
        task_id="cam-01:1/g1",
        event_id="cam-01:1",
        camera_id="cam-01",
        frame_id=1,
        group_id="g1",
        completed_time=timestamp(),
        model="sim-vl",
        key_id="key-1",
        verdict=events_pb2.Verdict(
            risk_level=events_pb2.RISK_LEVEL_HIGH,
            risk_types=["vehicle_pedestrian_conflict"],
            description="A pedestrian is about to cross in front of a moving car.",
        ),
    )
    await publish_alert(cache, alert)
    await publish_state(cache, risk_state("cam-01", 1))
    await page.wait_for_selector('[data-camera="cam-01"][data-risk="high"]', timeout=10_000)
    assert json.loads(await tile.get_attribute("data-groups") or "{}") == {"g1": "high"}
    # The group's box (x1=10 in the image, drawn 4 px outside) is now drawn in the 'high' red.
    red = await pixel(page, 6, 60)
    assert red[0] > 180 and red[1] < 90 and red[2] < 90, red

    await page.wait_for_selector("#alerts li.risk-high", timeout=10_000)
    assert "about to cross" in await page.locator("#alerts li").first.inner_text()

    # Health: each stage's snapshot in its own section, readable; a stage that stops reporting is marked silent.
    snapshot = {
        "source": "llm-scheduler",
        "interval_s": 0.5,
        "consumer lag (messages)": 3,
        "API keys": {"available": 9, "disabled": 1},
        "keys disabled": ["key-003"],
        "keys cooling": [],
    }
    await cache.publish(keys.HEALTH_CHANNEL, json.dumps(snapshot).encode())
    section = page.locator('#health section[data-source="llm-scheduler"]')
    await section.wait_for(timeout=10_000)
    text = await section.inner_text()
    assert "available 9 · disabled 1" in text and "key-003" in text and "consumer lag (messages)\t3" in text, text
    assert "interval_s" not in text and "{" not in text, text
    assert await section.get_attribute("data-state") == "reporting"
    # No further snapshot: after 3 intervals (1.5 s) and the next repaint the section says so.
    await page.wait_for_selector('#health section[data-source="llm-scheduler"][data-state="silent"]', timeout=10_000)
    assert "silent for" in await section.inner_text()

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert not errors, errors


def _verdict_alert(
    camera_id: str, group_id: str, level: events_pb2.RiskLevel.ValueType, at: float
) -> events_pb2.AssessmentResult:
    return events_pb2.AssessmentResult(
        task_id=f"{camera_id}:{int(at)}/{group_id}",
        event_id=f"{camera_id}:{int(at)}",
        camera_id=camera_id,
        frame_id=int(at),
        group_id=group_id,
        completed_time=timestamp(at),
        verdict=events_pb2.Verdict(risk_level=level, description=f"{group_id} at {int(at)}"),
    )


async def test_timeline_shows_the_recent_history_on_page_load(
    browser: Browser, gateway: GatewayApp, cache: InMemoryCache
) -> None:
    # Ten minutes of history before anyone opens the page: medium from 5 min ago, high (another group) from 2 min.
    now = time.time()
    await publish_alert(cache, _verdict_alert("cam-01", "g1", events_pb2.RISK_LEVEL_MEDIUM, now - 300))
    await publish_alert(cache, _verdict_alert("cam-01", "g2", events_pb2.RISK_LEVEL_HIGH, now - 120))
    state = risk_state("cam-01", 2)
    state.updated_time.CopyFrom(timestamp(now - 60))
    await publish_state(cache, state)

    page, errors = await open_dashboard(browser, gateway)
    await page.wait_for_selector('[data-camera="cam-01"][data-history]', timeout=10_000)

    async def timeline_rgb(seconds_ago: float) -> list[int]:
        rgba: list[int] = await page.evaluate(
            """(ago) => { const c = document.querySelector('[data-camera="cam-01"] canvas.timeline');
                 const x = Math.round(c.width * (600 - ago) / 600);
                 return Array.from(c.getContext('2d').getImageData(x, 7, 1, 1).data); }""",
            seconds_ago,
        )
        return rgba[:3]

    # RISK_COLORS in dashboard.js: medium #ef6c00, high #d32f2f; before the first alert nothing is drawn.
    assert await timeline_rgb(time.time() - now + 200) == [0xEF, 0x6C, 0x00]
    assert await timeline_rgb(time.time() - now + 90) == [0xD3, 0x2F, 0x2F]
    assert (await timeline_rgb(time.time() - now + 400))[:3] == [0, 0, 0]
    assert await page.locator("#alerts li", has_text="g1 at").count() == 1
    assert not errors, errors


async def test_a_camera_that_is_not_online_shows_why_next_to_it(
    browser: Browser, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway: GatewayApp = await start_gateway(
        make_settings([CameraConfig(id="cam-gone", source=str(tmp_path / "gone.avi"))], reconnect_initial_s=0.2)
    )
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{gateway.http_port}/")
    reason = page.locator('[data-camera="cam-gone"] .status-reason')
    await page.wait_for_function(
        "el => el.textContent.includes('no such video file')", arg=await reason.element_handle(), timeout=10_000
    )
    assert await reason.is_visible()


async def test_a_failed_assessment_shows_on_the_group_the_camera_and_the_alert_list(
    browser: Browser, gateway: GatewayApp, cache: InMemoryCache
) -> None:
    page, errors = await open_dashboard(browser, gateway)
    tile = await show_a_street_frame(page, gateway)

    # What the aggregator does with a failure: the failure alert, then the state with the group marked failed.
    failure = events_pb2.Failure(kind=events_pb2.FAILURE_KIND_INVALID_REPLY, message="key-1: the reply is empty")
    await publish_alert(
        cache,
        events_pb2.AssessmentResult(
            task_id="cam-01:2/g1", camera_id="cam-01", group_id="g1", completed_time=timestamp(), failure=failure
        ),
    )
    state = risk_state("cam-01", 2)
    state.groups[0].failure.CopyFrom(failure)
    await publish_state(cache, state)

    await page.wait_for_selector('[data-camera="cam-01"][data-failed=\'{"g1":"invalid_reply"}\']', timeout=10_000)
    assert await tile.locator(".failure").inner_text() == "g1: assessment failed: invalid_reply"
    assert await tile.locator(".failure").get_attribute("title") == "key-1: the reply is empty"
    assert "g1: high (assessment failed: invalid_reply)" in await tile.locator(".groups").inner_text()
    await page.wait_for_selector("#alerts li", timeout=10_000)
    assert "assessment failed: invalid_reply" in await page.locator("#alerts li").first.inner_text()

    # A verdict again clears the mark.
    await publish_state(cache, risk_state("cam-01", 3))
    await page.wait_for_selector('[data-camera="cam-01"][data-version="3"]', timeout=10_000)
    assert await tile.locator(".failure").inner_text() == ""
    assert not errors, errors


def near_miss_frame(t: float) -> bytes:
    """The 640×480 picture of testing.near_miss_event at time t: a road, the pedestrian and the car."""
    image = np.full((480, 640, 3), (90, 90, 90), np.uint8)
    cv2.rectangle(image, (0, 250), (640, 330), (60, 60, 60), -1)
    pedestrian_u, car_u = int(140 + 30 * t), int(420 - 120 * t)
    cv2.rectangle(image, (pedestrian_u - 8, 242), (pedestrian_u + 8, 298), (200, 170, 120), -1)
    cv2.rectangle(image, (car_u - 38, 262), (car_u + 38, 298), (40, 40, 160), -1)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


async def canvas_rgb(page: Page, x: int, y: int) -> list[int]:
    return (await pixel(page, x, y))[:3]


async def test_tracks_draw_trails_speeds_and_the_ttc_of_a_conflict_then_a_provisional_alert_resolves(
    browser: Browser, gateway: GatewayApp, cache: InMemoryCache, detector: FakeDetector
) -> None:
    detector.respond = lambda frame: near_miss_event(frame.camera_id, frame.frame_id, (frame.frame_id - 1) * 0.2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        calibrated = await http.put(
            "/api/cameras/cam-01/calibration",
            json={
                "image_points": [[100, 400], [500, 400], [500, 100], [100, 100]],
                "ground_points": [[0, 0], [20, 0], [20, 15], [0, 15]],
            },
        )
        assert calibrated.status_code == 200
    page, errors = await open_dashboard(browser, gateway)
    await page.wait_for_selector('#connection[data-state="online"]', timeout=10_000)
    tile = page.locator('[data-camera="cam-01"]')
    await page.wait_for_selector('[data-camera="cam-01"][data-calibrated="true"]', timeout=10_000)
    assert await tile.locator(".calibration").inner_text() == "calibrated"

    # Five frames at 5 FPS (t = 0 … 0.8 s): the tracks are estimated from the third on.
    for frame_id in range(1, 6):
        t = (frame_id - 1) * 0.2
        frame = detector_pb2.Frame(camera_id="cam-01", frame_id=frame_id, image=near_miss_frame(t))
        await gateway.cameras.get("cam-01").push(frame)
    await page.wait_for_function(
        "() => window.riskwatchOverlay && window.riskwatchOverlay['cam-01'] &&"
        " window.riskwatchOverlay['cam-01'].frame_id === 5",
        timeout=10_000,
    )
    overlay = await page.evaluate("() => window.riskwatchOverlay['cam-01']")
    tracks = {track["track_id"]: track for track in overlay["tracks"]}
    # Ground points u = 140 + 30 t (pedestrian) and 420 - 120 t (car), v = 300, over the last 1.5 s (all five).
    assert tracks[1]["trail"] == [[140, 300], [146, 300], [152, 300], [158, 300], [164, 300]]
    assert tracks[2]["trail"] == [[420, 300], [396, 300], [372, 300], [348, 300], [324, 300]]
    assert tracks[1]["speed"] == "1.5 m/s" and tracks[2]["speed"] == "6.0 m/s"
    [conflict] = overlay["conflicts"]
    # 8 m apart closing at 7.5 m/s: TTC 1.07 s, under 1.5 s, so drawn in the 'high' red.
    assert conflict["label"] == "TTC 1.1 s" and conflict["level"] == "high"
    assert conflict["from"] == [164, 300] and conflict["to"] == [324, 300]
    # On the canvas (640 px wide, as the image): the conflict line between the two, the car's trail behind it.
    assert await canvas_rgb(page, 200, 300) == [0xD3, 0x2F, 0x2F]
    assert await canvas_rgb(page, 400, 300) == [0xFF, 0xFF, 0xFF]

    # The task generator's provisional alert and the aggregator's state resting on it …
    measured = events_pb2.MeasuredDanger(
        risk_level=events_pb2.RISK_LEVEL_HIGH,
        risk_types=["near_miss"],
        description="pedestrian 1 and vehicle 2 head-on, TTC 1.1 s",
        conflict=near_miss_event("cam-01", 5, 0.8).groups[0].conflict,
    )
    task = {"task_id": "cam-01:5/g1", "event_id": "cam-01:5", "camera_id": "cam-01", "group_id": "g1"}
    await publish_alert(cache, events_pb2.AssessmentResult(**task, completed_time=timestamp(), measured=measured))
    provisional = events_pb2.CameraRiskState(
        camera_id="cam-01",
        version=1,
        max_level=events_pb2.RISK_LEVEL_HIGH,
        groups=[events_pb2.GroupRisk(group_id="g1", member_track_ids=[1, 2], provisional=measured)],
    )
    await publish_state(cache, provisional)
    await page.wait_for_selector('#alerts li[data-mark="provisional"]', timeout=10_000)
    assert "head-on, TTC 1.1 s" in await page.locator("#alerts li").first.inner_text()
    await page.wait_for_selector('[data-camera="cam-01"][data-version="1"]', timeout=10_000)
    assert await tile.locator(".groups").inner_text() == "g1: high (provisional)"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-near-miss.png"), full_page=True)

    # … then the LLM's verdict confirms it.
    verdict = events_pb2.Verdict(risk_level=events_pb2.RISK_LEVEL_HIGH, description="The car will hit the pedestrian.")
    await publish_alert(
        cache,
        events_pb2.AssessmentResult(
            **task,
            completed_time=timestamp(),
            verdict=verdict,
            provisional_resolution=events_pb2.PROVISIONAL_RESOLUTION_CONFIRMED,
        ),
    )
    confirmed = risk_state("cam-01", 2)
    await publish_state(cache, confirmed)
    await page.wait_for_selector('[data-camera="cam-01"][data-version="2"]', timeout=10_000)
    await page.wait_for_selector('#alerts li[data-mark="confirmed"]', timeout=10_000)
    assert await page.locator('#alerts li[data-mark="provisional"]').count() == 0
    assert await tile.locator(".groups").inner_text() == "g1: high (confirmed)"
    assert not errors, errors
