"""The label joiner: every prediction and label with the same (model, request id) are paired once,
whichever comes first, while both are held; the memory it holds is bounded, and what it drops is said."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitors.events.cloudevents import LabelEvent, PredictionEvent
from monitors.events.labels import LabelJoiner

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _prediction(model: str, request: str) -> PredictionEvent:
    return PredictionEvent(model=model, version="1", request_id=request, features={"x": 1.0}, event_time=AT)


def _label(model: str, request: str) -> LabelEvent:
    return LabelEvent(model=model, request_id=request, label=1, event_time=AT)


@settings(max_examples=60, deadline=None)
@given(
    requests=st.integers(min_value=0, max_value=300),
    labelled_share=st.floats(min_value=0, max_value=1),
    capacity=st.integers(min_value=1, max_value=400),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_pairs_are_the_keys_with_both_while_both_are_held_and_the_rest_is_counted(
    requests: int, labelled_share: float, capacity: int, seed: int
) -> None:
    rng = random.Random(seed)
    keys = [(rng.choice("ab"), f"r{index}") for index in range(requests)]
    events = [("prediction", key) for key in keys] + [
        ("label", key) for key in keys if rng.random() < labelled_share
    ]
    rng.shuffle(events)
    forgotten: list[str] = []
    joiner = LabelJoiner(capacity=capacity, on_forget=forgotten.append)

    # An independent account: what is held, oldest first, as plain lists.
    held: dict[str, list[tuple[str, str]]] = {"prediction": [], "label": []}
    dropped: list[str] = []
    expected, pairs = [], []
    for kind, key in events:
        if kind == "prediction":
            got = joiner.add_prediction(_prediction(*key))
            if key in held["label"]:
                held["label"].remove(key)
                expected.append(key)
            else:
                held["prediction"].append(key)
        else:
            got = joiner.add_label(_label(*key))
            if key in held["prediction"]:  # a joined prediction stays, for a corrected label
                expected.append(key)
            else:
                held["label"].append(key)
        for name in held:
            if len(held[name]) > capacity:
                held[name].pop(0)
                dropped.append(name)
        pairs += [(pair.prediction.model, pair.prediction.request_id) for pair in got]
        assert all(pair.label.request_id == pair.prediction.request_id for pair in got)

    assert pairs == expected
    assert (joiner.held_predictions, joiner.held_labels) == (len(held["prediction"]), len(held["label"]))
    assert joiner.held_predictions <= capacity and joiner.held_labels <= capacity
    assert forgotten == dropped
    assert (joiner.forgotten_predictions, joiner.forgotten_labels) == (
        dropped.count("prediction"),
        dropped.count("label"),
    )
    if capacity >= requests:  # nothing is dropped, and every label finds its prediction
        assert forgotten == []
        assert sorted(pairs) == sorted(key for kind, key in events if kind == "label")


def test_a_capacity_under_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LabelJoiner(capacity=0)
