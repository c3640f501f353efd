"""The plugin's own tests: its model, its mapping and its example, without any emulator."""

import json
import random
from datetime import UTC, datetime

import pytest
from orders_events.orders import OrderV1
from pydantic import ValidationError

ORDER = {
    "order_id": "ord-000123",
    "customer": "cus-0a1b2c3d",
    "amount_cents": 1999,
    "currency": "EUR",
    "placed_at": "2026-12-07T06:05:04.321Z",
}


def test_an_order_maps_to_its_row() -> None:
    order = OrderV1.model_validate_json(json.dumps(ORDER))
    assert order.row_key() == "cus-0a1b2c3d#ord-000123"
    assert order.timestamp_micros() == int(
        datetime(2026, 12, 7, 6, 5, 4, 321000, tzinfo=UTC).timestamp() * 1_000_000
    )
    assert {(c.family, c.qualifier, c.value) for c in order.cells()} == {
        ("o", b"amount_cents", b"1999"),
        ("o", b"currency", b"EUR"),
        ("o", b"placed_at", b"2026-12-07T06:05:04.321Z"),
    }


@pytest.mark.parametrize(
    "change",
    [
        {"amount_cents": -1},
        {"amount_cents": "1999"},  # strict: a string is not a number
        {"currency": "eur"},
        {"order_id": "123"},
        {"placed_at": "2026-12-07T06:05:04"},  # no offset
        {"coupon": "X"},  # unexpected field
    ],
)
def test_a_bad_order_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OrderV1.model_validate_json(json.dumps({**ORDER, **change}))


def test_the_example_is_valid_and_states_its_row() -> None:
    example = OrderV1.loadgen_example(random.Random(5), datetime(2026, 12, 7, tzinfo=UTC))
    order = OrderV1.model_validate_json(json.dumps(example.body))
    assert order.row_key() == example.row_key
    assert {f"{c.family}:{c.qualifier.decode()}": c.value.decode() for c in order.cells()} == (
        example.cells
    )
    assert order.event_time() == example.event_time
    assert OrderV1.offers_example()
