"""Which metric names a PromQL expression reads, and which series names a /metrics exposition provides."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

# Metrics the dashboard and the alerts read that this project's code does not export, each with its exporter.
# Only these may appear besides the names found in the real worker's and gate's /metrics.
EXTERNAL_METRICS = {
    "kafka_consumergroup_lag_sum": "kafka-exporter (danielqsj/kafka-exporter, docker-compose.yml): consumer-group "
    "lag summed over a topic's partitions; also the HPA alternative's external metric via prometheus-adapter",
    "up": "Prometheus itself: 1 when the last scrape of a target succeeded",
}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
_KEYWORDS |= {"inf", "nan", "start", "end"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,)?\s*\w+\s*\)\s*$")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or durations."""
    expr = _STRINGS.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers (Grafana variables such as $line live there)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries ($__rate_interval, 5m, 1h:1m)
    expr = _LABEL_LISTS.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        word = match.group(0)
        if expr[match.end() :].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def grafana_query_metric_names(query: str) -> set[str]:
    """A Grafana Prometheus variable query: label_values(metric, label) or a PromQL expression."""
    if match := _LABEL_VALUES.match(query):
        return {match.group(1)} if match.group(1) else set()
    return promql_metric_names(query)


def exposed_series_names(exposition: str) -> set[str]:
    """Every series name a /metrics exposition provides, labelled families without samples yet included."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "unknown": ("",),
    }
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in suffixes[family.type])
        names.update(sample.name for sample in family.samples)
    return names
