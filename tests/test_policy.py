"""Policy validation, serialisation and the named-policy registry."""

from __future__ import annotations

import dataclasses

import pytest

from cimconvert import Policy, PolicyError, get_policy, is_policy, list_policies, register_policy


@pytest.mark.parametrize("field,value", [
    ("adc_bits", 0), ("weight_slices", ()), ("input_slices", (0,)), ("array_rows", 0),
    ("weight_encoding", "sign_magnitude"), ("mode", "float"), ("weight_granularity", "row"),
    ("read_noise", -0.1), ("stuck_on_rate", 1.5), ("dac_bits", 2.5), ("g_on", float("nan")),
    ("adc_noise", 2.0), ("input_encoding", "offset_binary"), ("scale_block_rows", 200), ("scale_block_rows", 0), ("scale_block_rows", True),
])
def test_bad_field_is_named_with_allowed_values(field, value):
    with pytest.raises(PolicyError, match=field):
        Policy(**{field: value})


def test_scale_blocks_name_the_tile_height_they_must_be_a_multiple_of():
    with pytest.raises(PolicyError, match=r"scale_block_rows=96 .* multiple of array_rows=64"):
        Policy(array_rows=64, scale_block_rows=96)
    assert Policy(array_rows=64, scale_block_rows=256).tiles_per_scale_block == 4


def test_conductances_must_be_ordered():
    with pytest.raises(PolicyError, match="g_on"):
        Policy(g_on=1e-6, g_off=1e-5)


def test_replace_and_dict_round_trip():
    p = get_policy("slc2mlc3")
    q = dataclasses.replace(p, adc_bits=6)
    assert q.adc_bits == 6 and q.weight_slices == (1, 1, 2, 2, 2)
    assert Policy.from_dict(q.to_dict()) == q
    with pytest.raises(PolicyError, match="adc_bitz"):
        p.replace(adc_bitz=3)
    with pytest.raises(PolicyError, match="version"):
        Policy.from_dict({**p.to_dict(), "version": 99})


@pytest.mark.parametrize("name,slices", [
    ("slc8", (1,) * 8), ("mlc4", (2, 2, 2, 2)), ("slc2mlc3", (1, 1, 2, 2, 2)), ("slc3mlc1tlc1", (1, 1, 1, 2, 3))])
def test_name_grammar(name, slices):
    p = get_policy(name)
    assert p.weight_slices == slices and p.input_slices == slices
    assert (p.array_rows, p.array_cols) == (128, 128) and p.adc_bits is not None
    assert is_policy(name)


@pytest.mark.parametrize("name,bits", [("slc2mlc99", 200), ("slc1", 1), ("tlc6", 18)])
def test_grammar_names_outside_the_operand_widths_say_so(name, bits):
    with pytest.raises(PolicyError, match=rf"'{name}' cuts {bits}-bit operands; .* from 2 to 16 bits"):
        get_policy(name)
    assert not is_policy(name)


def test_unknown_policy_lists_close_matches():
    with pytest.raises(PolicyError, match="slc2mlc3"):
        get_policy("slc2mlc")
    assert not is_policy("nonsense")


def test_presets_are_listed_with_wildcards_and_extendable():
    assert {"ideal", "memintelli", "slc2mlc3"} <= set(list_policies())
    assert all(n.startswith("slc") for n in list_policies("slc*"))

    @register_policy
    def test_only_policy() -> Policy:
        """A preset registered by a test."""
        return Policy(name="test_only_policy", adc_bits=6)

    assert get_policy("test_only_policy").adc_bits == 6
    assert get_policy("ideal").adc_bits is None and get_policy("ideal").is_noise_free
