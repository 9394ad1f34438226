"""Metric names a PromQL expression reads, without a PromQL parser.

Strings, label matchers, range selectors, grouping clauses and function calls are
removed; what is left that looks like an identifier is a metric name.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
     "inf", "nan", "Inf", "NaN", "atan2"}
)  # fmt: skip
_GRAFANA_VARIABLE = re.compile(r"\$__\w+|\$\{?\w+\}?")


def metric_names(expr: str) -> set[str]:
    """Every metric (or recording rule) name ``expr`` selects.

    >>> sorted(metric_names('sum by (le) (rate(rtml_x_bucket{code=~"5.."}[5m])) / on(a) clamp_min(up, 1e-9)'))
    ['rtml_x_bucket', 'up']
    >>> sorted(metric_names('rtml:ratio:rate5m > 0.01 and deriv(x[$__rate_interval]) > 0'))
    ['rtml:ratio:rate5m', 'x']
    """
    text = _STRING.sub(" ", expr)
    text = _GRAFANA_VARIABLE.sub("5m", text)
    while True:
        stripped = _MATCHERS.sub(" ", _RANGE.sub(" ", text))
        if stripped == text:
            break
        text = stripped
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS and not re.fullmatch(r"\d+\w*", name)}


def exported_names(exposition: str) -> set[str]:
    """The series names a Prometheus text exposition can serve, from its ``# TYPE`` lines.

    A labelled metric with no child yet has a TYPE line and no sample; it still counts.

    >>> sorted(exported_names("# TYPE a_seconds histogram\\n# TYPE b_total counter\\n# TYPE c gauge\\n"))
    ['a_seconds', 'a_seconds_bucket', 'a_seconds_count', 'a_seconds_sum', 'b_total', 'c']
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[:2] != ["#", "TYPE"]:
            continue
        name, kind = parts[2], parts[3]
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
        elif kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
    return names
