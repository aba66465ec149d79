"""The metric names and label matchers in a PromQL expression, for checking a dashboard.

Not a parser: a tokenizer that blanks out what cannot hold a metric name (strings, comments,
ranges, the label lists of `by`/`on`/`group_left`...), then takes every identifier that is
not a function call or a keyword. Label matchers are read from each `name{...}` before
they are blanked. Grafana's variables (`$namespace`, `$__rate_interval`) sit only inside
strings and ranges in our queries, so they go with them; Grafana's own variable functions
(`label_values(QUERY, label)`, `query_result(QUERY)`) are unwrapped by `grafana_query`.
"""

from __future__ import annotations

import re

# Strings and comments, in one pattern: whichever starts first hides the other (a quote in
# a comment, a `#` in a regex).
_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`|#[^\n]*')
_RANGE = re.compile(r"\[[^\]]*\]")
# A label list belongs to the keyword before it; blanking both leaves `sum (...)`, so an
# aggregation reads like any other call whichever side its `by` clause is written on.
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
# Not preceded by a digit, dot or `$`: skips the `m` of `5m`, the `e3` of `1e3`, variables.
_IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?")
_SELECTOR = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")

KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "atan2", "inf", "nan"}
)

_GRAFANA_QUERY = re.compile(
    r"^\s*(?:label_values\(((?:.*,)?)\s*\w+\s*\)|query_result\((.*)\))\s*$", re.S
)


def _blank(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(" ", text)


def _without_literals(expr: str) -> str:
    """`expr` with every string emptied (its quotes kept) and every comment blanked."""

    def empty(literal: re.Match[str]) -> str:
        text = literal.group()
        if text.startswith("#"):
            return " " * len(text)
        return text[0] + " " * (len(text) - 2) + text[-1]

    return _LITERAL.sub(empty, expr)


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects, e.g. `x_bucket` in `sum by (le) (rate(x_bucket[5m]))`."""
    text = _without_literals(expr)
    for pattern in (_MATCHERS, _RANGE, _LABEL_LIST):
        text = _blank(pattern, text)
    return {
        name
        for name, call in _IDENTIFIER.findall(text)
        if not call and name.lower() not in KEYWORDS
    }


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each `name{matchers}` of an expression: the metric and the labels it matches on."""
    return [
        (name or "", set(_MATCHER.findall(matchers)))
        for name, matchers in _SELECTOR.findall(_without_literals(expr))
    ]


def grafana_query(query: str) -> str:
    """The PromQL inside a Grafana variable query (label_values / query_result), or itself."""
    match = _GRAFANA_QUERY.match(query)
    if match is None:
        return query
    if match.group(1) is not None:
        return match.group(1).removesuffix(",")  # label_values(label) selects no metric
    return match.group(2)
