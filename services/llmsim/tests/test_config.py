"""Configuration validates once, patches merge per key, and tokens never leak from its views or errors."""

from __future__ import annotations

import pytest

from riskwatch_llmsim.config import ConfigPatchError, SimulatorConfig, apply_patch, label_for_unknown_token

TOKEN = "sim-key-001-SECRET"


def test_per_key_overrides_inherit_the_rest() -> None:
    config = SimulatorConfig.model_validate({"qps": 10, "fault_5xx": 0.1, "per_key": {"key-002": {"qps": 2}}})
    key2, key1 = config.policy_for("key-002"), config.policy_for("key-001")
    assert (key2.qps, key2.fault_5xx, key2.rpm) == (2, 0.1, 600)
    assert (key1.qps, key1.revoked) == (10, False)


def test_patch_merges_per_key_field_by_field_and_null_clears() -> None:
    config = SimulatorConfig.model_validate({"per_key": {"key-003": {"qps": 2}}})
    patched = apply_patch(config, {"fault_5xx": 0.1, "per_key": {"key-003": {"revoked": True}}})
    assert patched.fault_5xx == 0.1
    assert patched.per_key["key-003"].qps == 2
    assert patched.per_key["key-003"].revoked is True
    assert "key-003" not in apply_patch(patched, {"per_key": {"key-003": None}}).per_key
    assert config.fault_5xx == 0.0  # the original is untouched


@pytest.mark.parametrize(
    "patch",
    [
        {"fault_5xx": 2},
        {"fault_5xx": 0.6, "fault_timeout": 0.6},
        {"per_key": {"key-001": {"fault_invalid_json": 0.8, "fault_5xx": 0.3}}},
        {"no_such_setting": 1},
        {"per_key": {"key-001": {"no_such_override": 1}}},
        {"server_error_statuses": [404]},
        {"invalid_json_modes": ["gibberish"]},
    ],
)
def test_invalid_patch_is_refused(patch: dict[str, object]) -> None:
    with pytest.raises(ConfigPatchError):
        apply_patch(SimulatorConfig(), patch)


def test_duplicate_tokens_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigPatchError) as raised:
        apply_patch(SimulatorConfig.model_validate({"keys": {"key-001": TOKEN}}), {"keys": {"key-002": TOKEN}})
    assert TOKEN not in str(raised.value)


def test_public_view_lists_labels_not_tokens() -> None:
    config = SimulatorConfig.model_validate({"keys": {"key-001": TOKEN}})
    view = config.public_view()
    assert view["keys"] == ["key-001"]
    assert TOKEN not in repr(view)
    assert TOKEN not in repr(config)


def test_unknown_token_label_is_stable_and_opaque() -> None:
    label = label_for_unknown_token(TOKEN)
    assert label == label_for_unknown_token(TOKEN)
    assert label.startswith("unknown-") and len(label) == len("unknown-") + 8
    assert TOKEN not in label
