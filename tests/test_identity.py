"""Canonical JSON of task arguments: what makes two constructions one task."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from pytest_taskproc.errors import TaskArgumentError
from pytest_taskproc.identity import (
    DICT_TAG,
    TUPLE_TAG,
    bind_arguments,
    build_signature,
    canonical_arguments,
    encode_key,
)


def _build(self: object, x: Any, y: Any = 2, *rest: Any, z: Any = None, **extra: Any) -> None:
    """A ``build_task`` with every kind of parameter."""


SIGNATURE = build_signature(_build)


def key(*args: Any, **kwargs: Any) -> str:
    bound = bind_arguments("Owner", SIGNATURE, args, kwargs)
    return encode_key(canonical_arguments("Owner", bound))


def canonical_x(value: Any) -> Any:
    bound = bind_arguments("Owner", SIGNATURE, (value,), {})
    return canonical_arguments("Owner", bound)["x"]


def test_signature_drops_self() -> None:
    assert list(SIGNATURE.parameters) == ["x", "y", "rest", "z", "extra"]


def test_positional_keyword_and_default_spellings_are_one_key() -> None:
    assert key(1) == key(1, 2) == key(x=1) == key(x=1, y=2) == key(1, y=2, z=None)
    assert key(1) != key(1, 3)


def test_key_is_compact_json_with_sorted_keys() -> None:
    text = key("a", z={"a": [1.5, None, True], "b": 1})
    assert " " not in text
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert json.loads(text)["z"] == {"a": [1.5, None, True], "b": 1}


def test_dict_key_order_is_part_of_the_identity() -> None:
    """build_task sees the dict as given, and code iterating it depends on the order."""
    assert key({"a": 1, "b": 2}) != key({"b": 2, "a": 1})
    assert key({1: "a", 2: "b"}) != key({2: "b", 1: "a"})
    assert canonical_x({"b": 2, "a": 1}) == {DICT_TAG: [["b", 2], ["a", 1]]}
    # Keys in sorted order keep the plain form (keys of existing caches stay).
    assert canonical_x({"a": 1, "b": 2}) == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    "value",
    ["text", "", 0, -7, 2**80, 1.25, True, False, None, [1, "a", None], {"k": [1, {"n": 2}]}],
)
def test_plain_json_values_are_written_as_json(value: Any) -> None:
    """The common case stays readable in ``args.json``: exactly what json.dumps writes."""
    assert canonical_x(value) == value
    assert json.loads(key(value))["x"] == value


def test_tuples_are_tagged_and_differ_from_lists() -> None:
    assert canonical_x((1, (2, 3))) == {TUPLE_TAG: [1, {TUPLE_TAG: [2, 3]}]}
    assert key((1, 2)) != key([1, 2])
    assert key(()) != key([])


def test_star_args_and_star_kwargs_are_part_of_the_key() -> None:
    assert key(1, 2, 3) != key(1, 2, 4)
    assert key(1, w=1) != key(1, w=2)
    assert json.loads(key(1, 2, 3, w=4))["extra"] == {"w": 4}


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({0: "a"}, {"0": "a"}),
        ({True: "a"}, {1: "a"}),
        ({None: "a"}, {"null": "a"}),
        ({1: "a", "1": "a"}, {"1": "a"}),
        (1, True),
        (0, False),
        (1, 1.0),
        (1, "1"),
        (None, "null"),
        ([1, 2], (1, 2)),
    ],
    ids=repr,
)
def test_values_json_would_merge_stay_apart(left: Any, right: Any) -> None:
    assert key(left) != key(right)


def test_non_string_dict_keys_are_tagged_pairs_in_their_order() -> None:
    tagged = canonical_x({2: "b", "x": 1, None: 0})
    assert tagged == {DICT_TAG: [[2, "b"], ["x", 1], [None, 0]]}
    assert tagged == canonical_x({2: "b", "x": 1, None: 0})
    assert tagged != canonical_x({None: 0, "x": 1, 2: "b"})


@pytest.mark.parametrize("reserved", ["__tuple__", "__dict__", "__task__"])
def test_string_dict_using_a_tag_name_cannot_imitate_a_tagged_value(reserved: str) -> None:
    imitation = {reserved: [1, 2]}
    assert key(imitation) != key((1, 2))
    assert DICT_TAG in canonical_x(imitation)


def test_nested_values_are_canonical_at_every_depth() -> None:
    assert key([{"a": (1,)}]) == key([{"a": (1,)}])
    assert key([{"a": (1,)}]) != key([{"a": [1]}])
    assert key({"k": {0: (None,)}}) != key({"k": {"0": (None,)}})


class _Ref:
    """Stands for a task: anything with ``_tp_identity`` serialises as its reference."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _tp_identity(self) -> dict[str, Any]:
        return {"__task__": self.name, "__args__": {}}


def test_objects_with_an_identity_serialise_as_that_identity() -> None:
    assert canonical_x([_Ref("m.A")]) == [{"__task__": "m.A", "__args__": {}}]
    assert key(_Ref("m.A")) == key(_Ref("m.A"))
    assert key(_Ref("m.A")) != key(_Ref("m.B"))


@pytest.mark.parametrize(
    ("value", "shown", "where"),
    [
        ({1, 2}, "{1, 2}", "'x'"),
        (frozenset({3}), "frozenset({3})", "'x'"),
        (b"raw", "b'raw'", "'x'"),
        (math.nan, "nan", "'x'"),
        (math.inf, "inf", "'x'"),
        (-math.inf, "-inf", "'x'"),
        ([1, [2, {5}]], "{5}", "'x[1][1]'"),
        ({"a": object}, "<class 'object'>", "\"x['a']\""),
        ({(1, 2): "v"}, "(1, 2)", "key (1, 2)"),
        ({1.5: "v"}, "1.5", "key 1.5"),
    ],
    ids=repr,
)
def test_unsupported_values_are_rejected_naming_owner_place_and_value(
    value: Any, shown: str, where: str
) -> None:
    with pytest.raises(TaskArgumentError) as info:
        canonical_x(value)
    message = str(info.value)
    assert message.startswith("Owner: argument ")
    assert where in message
    assert shown in message
    assert isinstance(info.value, TypeError)


def test_long_offending_values_are_shortened_in_the_message() -> None:
    with pytest.raises(TaskArgumentError) as info:
        canonical_x(set(range(1000)))
    assert len(str(info.value)) < 600
    assert "..." in str(info.value)


def test_binding_errors_name_the_owner() -> None:
    with pytest.raises(TaskArgumentError, match=r"^Owner: missing a required argument: 'x'"):
        bind_arguments("Owner", SIGNATURE, (), {})


def test_encode_key_refuses_nan_that_slipped_past_canonicalisation() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_key({"x": math.nan})
