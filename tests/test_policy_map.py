"""PolicyMap: QConfigMapping precedence, convenience options, serialisation, errors."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from cimconvert import PolicyError, PolicyMap, get_policy


def _resolve(policy_map, name, op_type="linear", num_weights=1000, **flags):
    return policy_map.resolve(name, op_type, num_weights=num_weights, **flags)


def test_precedence_default_then_op_type_then_regex_then_name():
    policy_map = (PolicyMap("slc8")
                  .set_op_type("conv2d", "mlc4")
                  .set_name_regex(r"layer1\.", "slc2mlc3")
                  .set_name("layer1.0", "ideal"))
    assert _resolve(policy_map, "fc") == (get_policy("slc8"), "default")
    assert _resolve(policy_map, "conv1", "conv2d") == (get_policy("mlc4"), "op_type 'conv2d'")
    assert _resolve(policy_map, "layer1.1.conv1", "conv2d")[0] == get_policy("slc2mlc3")
    assert _resolve(policy_map, "layer1.0.conv1", "conv2d") == (get_policy("ideal"), "name 'layer1.0'")


def test_first_matching_regex_wins_in_insertion_order():
    policy_map = PolicyMap("slc8").set_name_regex("blocks", "mlc4").set_name_regex(r"blocks\.0", "ideal")
    assert _resolve(policy_map, "blocks.0.attn.qkv") == (get_policy("mlc4"), "name_regex 'blocks'")
    assert _resolve(policy_map, "head.blocks")[1] == "default"  # re.match anchors at the start


def test_exact_name_covers_children_and_the_longest_name_wins():
    policy_map = PolicyMap("slc8").set_name("layer1", None).set_name("layer1.0.conv2", "ideal")
    assert _resolve(policy_map, "layer1.0.conv1") == (None, "name 'layer1'")
    assert _resolve(policy_map, "layer1.0.conv2")[0] == get_policy("ideal")
    assert _resolve(policy_map, "layer10.conv")[1] == "default"  # a prefix that is not a parent


def test_none_default_keeps_everything_digital():
    assert _resolve(PolicyMap(), "fc") == (None, "default")


def test_op_type_accepts_classes_functions_and_names():
    policy_map = (PolicyMap().set_op_type(nn.Linear, "ideal").set_op_type(F.conv1d, "slc8")
                  .set_op_type("Conv2d", "mlc4"))
    assert set(policy_map.op_types) == {"linear", "conv1d", "conv2d"}
    with pytest.raises(PolicyError, match="allowed: linear, conv1d, conv2d"):
        PolicyMap().set_op_type(nn.Conv3d, "ideal")


def test_convenience_options_override_every_rule():
    policy_map = PolicyMap("ideal", first_last_digital=True, min_weights=100).set_name("stem", "slc8")
    assert _resolve(policy_map, "stem", first=True) == (None, "first_digital")
    assert _resolve(policy_map, "fc", last=True) == (None, "last_digital")
    assert _resolve(policy_map, "tiny", num_weights=99) == (None, "min_weights=100 (99 weights)")
    assert _resolve(policy_map, "ok", num_weights=100)[0] == get_policy("ideal")
    only_last = PolicyMap("ideal", last_digital=True)
    assert _resolve(only_last, "stem", first=True)[0] == get_policy("ideal")
    assert PolicyMap("ideal").set_first_last_digital(last=False).first_digital


def test_dict_round_trip_writes_presets_by_name_and_overrides_as_differences():
    policy_map = (PolicyMap("slc2mlc3", first_digital=True, min_weights=64)
                  .set_op_type("conv2d", {"preset": "slc2mlc3", "adc_bits": 6})
                  .set_name_regex(r"blocks\.\d+\.attn", get_policy("ideal"))
                  .set_name("head", None)
                  .set_name("stem", get_policy("slc8").replace(name="my_chip")))
    data = policy_map.to_dict()
    assert data["default"] == "slc2mlc3"
    assert data["op_type"] == {"conv2d": {"preset": "slc2mlc3", "adc_bits": 6}}
    assert data["name_regex"] == {r"blocks\.\d+\.attn": "ideal"}
    assert data["name"]["head"] is None
    assert data["name"]["stem"]["name"] == "my_chip"  # not a preset: the full policy
    assert PolicyMap.from_dict(data) == policy_map
    assert PolicyMap.from_dict(data).op_types["conv2d"].adc_bits == 6


def test_from_yaml_with_shorthand_and_preset_overrides(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "default: {preset: slc2mlc3, adc_bits: 6, weight_slices: [2, 2, 2, 2]}\n"
        "first_last_digital: true\n"
        "name:\n  fc: null\n"
    )
    policy_map = PolicyMap.from_yaml(path)
    assert policy_map.default.adc_bits == 6 and policy_map.default.weight_slices == (2, 2, 2, 2)
    assert policy_map.first_digital and policy_map.last_digital
    assert policy_map.names == {"fc": None}
    policy_map.to_yaml(tmp_path / "again.yaml")
    assert PolicyMap.from_yaml(tmp_path / "again.yaml") == policy_map


def test_bad_input_is_one_clear_policy_error(tmp_path):
    with pytest.raises(PolicyError, match="Did you mean: slc2mlc3"):
        PolicyMap("slc2mlc")
    with pytest.raises(PolicyError, match="adc_bits"):
        PolicyMap({"preset": "slc8", "adc_bits": 99})
    with pytest.raises(PolicyError, match="Unknown policy field 'adc_bit'"):
        PolicyMap({"preset": "slc8", "adc_bit": 6})
    with pytest.raises(PolicyError, match="Invalid name regex"):
        PolicyMap().set_name_regex("blocks[", "ideal")
    with pytest.raises(PolicyError, match="min_weights"):
        PolicyMap(min_weights=-1)
    with pytest.raises(PolicyError, match=r"Unknown policy map keys \['defualt'\]"):
        PolicyMap.from_dict({"defualt": "ideal"})
    with pytest.raises(PolicyError, match="Cannot read policy map"):
        PolicyMap.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="first_digital='yes' is invalid; allowed: true, false"):
        PolicyMap("slc2mlc3", first_digital="yes")
    with pytest.raises(PolicyError, match="first_digital='yes please' is invalid"):
        PolicyMap.from_dict({"default": "ideal", "first_digital": "yes please"})
    with pytest.raises(PolicyError, match="last=1 is invalid"):
        PolicyMap().set_first_last_digital(last=1)
    (tmp_path / "twice.yaml").write_text("default: ideal\ndefault: slc2mlc3\n")
    with pytest.raises(PolicyError, match="key 'default' is given twice"):
        PolicyMap.from_yaml(tmp_path / "twice.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"default: id\xe9al\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        PolicyMap.from_yaml(tmp_path / "latin1.yaml")
