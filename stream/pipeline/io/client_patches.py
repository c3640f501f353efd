"""The one place worker code relies on a Google client's internals: raw MutateRows entries.

The Bigtable data client turns each entry into its request proto through proto-plus; the raw
protobuf of the same entry is eight times cheaper (stream/DESIGN.md, "Patches").
`RawSetCellsEntry` overrides the client's private `_to_pb` to hand it the raw one, wrapped:
the request is the same bytes. stream/launch/patches.py checks the installed client against
VERSIONS at start-up; `--patches=off` writes the client's own entries instead.
"""

from importlib.metadata import version

from google.cloud.bigtable.data import RowMutationEntry
from google.cloud.bigtable_v2.types import MutateRowsRequest

TOUCHES = ("google.cloud.bigtable.data.RowMutationEntry._to_pb",)
VERSIONS = ">=2.42,<2.51"  # the google-cloud-bigtable releases it was written for
_FIRST, _END = (2, 42), (2, 51)
_RAW_ENTRY = MutateRowsRequest.Entry.pb()  # the protobuf class behind proto-plus


def installed_version() -> str:
    """The installed google-cloud-bigtable version."""
    return version("google-cloud-bigtable")


def written_for(release: str) -> bool:
    """Whether `release` (e.g. 2.50.2) is one of VERSIONS."""
    parts = release.split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return False
    return _FIRST <= major_minor < _END


class RawSetCellsEntry(RowMutationEntry):
    """A RowMutationEntry of SetCell mutations whose request proto is built directly."""

    def _to_pb(self) -> MutateRowsRequest.Entry:
        entry = _RAW_ENTRY(row_key=self.row_key)
        for mutation in self.mutations:
            cell = entry.mutations.add().set_cell
            cell.family_name = mutation.family
            cell.column_qualifier = mutation.qualifier
            cell.value = mutation.new_value
            cell.timestamp_micros = mutation.timestamp_micros
        return MutateRowsRequest.Entry.wrap(entry)
