"""Error texts folded so similar errors group: ids, numbers, times and hex become placeholders."""

import re

# Order matters: a time or a UUID holds numbers, a quoted row key may hold a UUID.
_RULES = (
    (
        re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)?"),
        "<time>",
    ),
    (
        re.compile(r"(?i)\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b"),
        "<uuid>",
    ),
    (re.compile(r"'[^'\s]{1,256}'"), "'<id>'"),
    (re.compile(r'"[^"\s]{1,256}"'), '"<id>"'),
    (re.compile(r"`[^`\s]{1,256}`"), "`<id>`"),
    (re.compile(r"(?i)\b0x[0-9a-f]+\b"), "<hex>"),
    # a long run of hex digits with both digits and letters (a hash, an id)
    (re.compile(r"(?i)\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b"), "<hex>"),
    # a standalone number; not the 1 of `consent.v1` or `UTF-8`, nor the 604800 of `604800s`
    (re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?!\w)"), "<n>"),
)
# `'<id>', '<id>'` (a list of ids) is one placeholder: one unknown id or three group together.
_LISTS = re.compile(r"('<id>'|\"<id>\"|`<id>`|<uuid>|<hex>|<n>|<time>)(?:, \1)+")


def fold_error(text: str) -> str:
    """The error with its variable parts replaced, e.g. `unknown service '<id>'`."""
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return _LISTS.sub(r"\1", text)
