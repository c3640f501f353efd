"""orders.v1: one row per order, under the customer, in its own table `orders`."""

import random
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from schemas.base import (
    ABSENT,
    Column,
    Encoding,
    Example,
    MappedEvent,
    TableSpec,
    event_time_field,
    format_rfc3339_millis,
)

FAMILY = "o"
ORDERS_TABLE = TableSpec(group="orders", default_table_id="orders", families=(FAMILY,))
CURRENCIES = ("EUR", "USD", "GBP")

OrderId = Annotated[str, Field(pattern=r"^ord-[0-9]{6,12}$")]
CustomerId = Annotated[str, Field(pattern=r"^cus-[0-9a-f]{8}$")]


class OrderV1(MappedEvent):
    """`{"order_id", "customer", "amount_cents", "currency", "placed_at"}`.

    Key `customer#order_id`: a customer's orders are contiguous. A re-sent order rewrites
    the same cells (their timestamp is `placed_at`).
    """

    schema_name = "orders.v1"
    table = ORDERS_TABLE
    row_key_shape = "customer#order_id"
    columns = (
        Column(FAMILY, "amount_cents", Encoding.TEXT),
        Column(FAMILY, "currency", Encoding.TEXT),
        Column(FAMILY, "placed_at", Encoding.TEXT),
    )

    order_id: OrderId
    customer: CustomerId
    amount_cents: Annotated[int, Field(ge=0, le=10_000_000_00)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    placed_at: datetime = Field(default=ABSENT, validate_default=True)

    @field_validator("placed_at", mode="before")
    @classmethod
    def _parse_placed_at(cls, value: Any, info: ValidationInfo) -> datetime:
        return event_time_field(value, info)  # RFC 3339 or epoch s/ms, as the built-ins

    def row_key(self) -> str:
        """`customer#order_id`."""
        return f"{self.customer}#{self.order_id}"

    def event_time(self) -> datetime:
        """When the order was placed."""
        return self.placed_at

    def column_values(self) -> dict[str, Any]:
        """Every column, by qualifier."""
        return {
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "placed_at": format_rfc3339_millis(self.placed_at),
        }

    @classmethod
    def loadgen_example(cls, rng: random.Random, now: datetime) -> Example:
        """A valid order placed up to a minute before `now`, and the row it becomes."""
        placed = now - timedelta(milliseconds=rng.randrange(60_000))
        placed -= timedelta(microseconds=placed.microsecond % 1000)  # whole milliseconds
        order = f"ord-{rng.randrange(10**9):09d}"
        customer = f"cus-{rng.randrange(16**8):08x}"
        amount = rng.randrange(100, 50_000)
        currency = rng.choice(CURRENCIES)
        stamp = placed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{placed.microsecond // 1000:03d}Z"
        body = {
            "order_id": order,
            "customer": customer,
            "amount_cents": amount,
            "currency": currency,
            "placed_at": stamp,
        }
        # Stated from the documented mapping, not computed with the model.
        cells = {"o:amount_cents": str(amount), "o:currency": currency, "o:placed_at": stamp}
        return Example(body, f"{customer}#{order}", placed, cells)
