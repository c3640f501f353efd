"""The pull source's pacing alone: a batch's wait from the arrival rate, and helper readers."""

import pytest
from apache_beam.utils.timestamp import Timestamp

from stream.pipeline.io.pull_pacing import (
    HELPERS_STAY_SECONDS,
    PARK_LONG_SECONDS,
    PARK_SHORT_SECONDS,
    WORTH_A_BUNDLE,
    BatchWait,
    Readers,
)


def test_with_no_rate_yet_a_partial_batch_waits_the_longest() -> None:
    assert BatchWait(longest=0.5, full=1000).wait(3) == 0.5


def test_a_batch_worth_a_bundle_or_full_waits_for_nothing() -> None:
    assert BatchWait(longest=0.5, full=1000).wait(WORTH_A_BUNDLE) == 0.0
    assert BatchWait(longest=0.5, full=100).wait(100) == 0.0  # a small --pull_max_messages


def test_the_wait_is_what_the_rest_of_a_bundles_worth_takes_to_arrive() -> None:
    wait = BatchWait(longest=0.5, full=1000)
    wait.seen(0, now=10.0)
    wait.seen(2000, now=11.0)  # 2,000 a second
    assert wait.rate == 2000
    assert wait.wait(50) == pytest.approx((WORTH_A_BUNDLE - 50) / 2000)


def test_the_wait_never_passes_the_longest() -> None:
    wait = BatchWait(longest=0.5, full=1000)
    wait.seen(0, now=10.0)
    wait.seen(100, now=11.0)  # 100 a second: a bundle's worth would take 2.5 s
    assert wait.wait(1) == 0.5


def test_sparse_traffic_waits_for_nothing() -> None:
    # One message every 4 s: a 0.5 s wait would bring 0.125 messages, and only latency.
    wait = BatchWait(longest=0.5, full=1000)
    wait.seen(1, now=0.0)
    for n in range(1, 6):
        wait.seen(1, now=4.0 * n)
    assert wait.rate == pytest.approx(0.25)
    assert wait.wait(1) == 0.0


def test_the_rate_follows_the_traffic_smoothly() -> None:
    wait = BatchWait(longest=0.5, full=1000)
    wait.seen(0, now=0.0)
    wait.seen(1000, now=1.0)
    wait.seen(0, now=2.0)  # an empty pull: the rate falls, but not to nothing at once
    assert wait.rate is not None and 0 < wait.rate < 1000


def test_helpers_pull_only_after_a_full_batch_of_the_lead_and_for_a_while() -> None:
    readers = Readers()
    assert readers.helper_parks(now=5.0) == PARK_SHORT_SECONDS  # the lead has not pulled yet
    readers.lead_pulled(3, full=False, watermark=Timestamp(10), now=5.0)
    assert readers.helper_parks(now=5.0) == PARK_LONG_SECONDS  # light traffic: rarely
    readers.lead_pulled(1000, full=True, watermark=Timestamp(11), now=6.0)
    assert readers.helper_parks(now=6.0 + HELPERS_STAY_SECONDS) == 0.0
    # Busy, not full: helpers park, but check again soon.
    readers.lead_pulled(WORTH_A_BUNDLE, full=False, watermark=Timestamp(12), now=6.5)
    assert readers.helper_parks(now=6.1 + HELPERS_STAY_SECONDS) == PARK_SHORT_SECONDS


def test_helpers_report_the_leads_latest_watermark() -> None:
    readers = Readers()
    assert readers.watermark is None
    readers.lead_pulled(1, full=False, watermark=Timestamp(10), now=1.0)
    readers.lead_pulled(0, full=False, watermark=None, now=2.0)  # nothing new: kept
    assert readers.watermark == Timestamp(10)


def test_each_reader_has_its_own_wait() -> None:
    readers = Readers()
    lead = readers.batch_wait(0, 0.5, 1000)
    assert readers.batch_wait(0, 0.5, 1000) is lead
    assert readers.batch_wait(1, 0.5, 1000) is not lead


def test_a_prober_checks_rarely_unless_it_finds_full_batches() -> None:
    readers = Readers()
    assert readers.helper_parks(now=1.0, prober=True) == PARK_SHORT_SECONDS  # not probed yet
    readers.lead_pulled(WORTH_A_BUNDLE, full=False, watermark=None, now=1.0)
    # A big probe under light traffic took what the other process's lead waits for.
    assert readers.helper_parks(now=1.0, prober=True) == PARK_LONG_SECONDS
    readers.lead_pulled(1000, full=True, watermark=None, now=2.0)
    assert readers.helper_parks(now=2.5, prober=True) == 0.0  # a backlog: it leads
