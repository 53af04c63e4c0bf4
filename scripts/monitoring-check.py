"""`make lint` part: the alert rules and the dashboard under
k8s/components/monitoring parse (every PromQL expression too), and every
metric they query is one the code exports, by its Prometheus name (an
OTLP metric `oms.feed.lag` in seconds, a histogram, is queried as
`oms_feed_lag_seconds_bucket`); every metric the code exports is on the
dashboard. A renamed metric fails here, not in production."""
import json
import pathlib
import re
import sys

import promql_parser
import yaml

root = pathlib.Path(__file__).resolve().parent.parent
mon = root / "k8s/components/monitoring"

# Instruments in the code: name, kind, unit.
make = re.compile(
    r'\.(u64_counter|f64_counter|u64_histogram|f64_histogram|'
    r'u64_observable_gauge|i64_observable_gauge|f64_observable_gauge|'
    r'u64_gauge|i64_gauge|f64_gauge)\(\s*"([a-z0-9_.]+)"\s*\)'
    r'(?P<rest>(?:\s*\.with_[a-z_]+\((?:[^()]|\([^()]*\))*\))*)',
    re.S,
)
exported = {}  # Prometheus series name -> OTLP metric name
for path in list((root / "services").rglob("*.rs")) + list((root / "shared").rglob("*.rs")):
    for m in make.finditer(path.read_text()):
        kind, name, rest = m.group(1), m.group(2), m.group("rest")
        base = name.replace(".", "_")
        if '.with_unit("s")' in rest:
            base += "_seconds"
        if "counter" in kind:
            exported[base + "_total"] = name
        elif "histogram" in kind:
            for suffix in ("_bucket", "_count", "_sum"):
                exported[base + suffix] = name
        else:
            exported[base] = name

series = re.compile(r"\b(oms_[a-z0-9_]+|rpc_server_[a-z0-9_]+)\b")
errors = []
used = set()


def check(where, expr):
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser's own error type
        errors.append(f"{where}: does not parse: {e}")
        return
    for s in series.findall(expr):
        if s in exported:
            used.add(exported[s])
        else:
            errors.append(f"{where}: {s} is not a metric the code exports")


rules = yaml.safe_load((mon / "alerts.yaml").read_text())
for group in rules["groups"]:
    for rule in group["rules"]:
        where = f"alerts.yaml {rule.get('alert')}"
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in rule:
                errors.append(f"{where}: no {key}")
        if rule.get("labels", {}).get("severity") not in ("page", "ticket"):
            errors.append(f"{where}: severity must be page or ticket")
        check(where, rule.get("expr", ""))

dashboard = json.loads((mon / "oms-dashboard.json").read_text())
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        check(f"oms-dashboard.json '{panel['title']}'", target["expr"])
for name in sorted(set(exported.values()) - used):
    errors.append(f"oms-dashboard.json: {name} is exported but on no panel")

if not exported:
    errors.append("no metric found in the code: the pattern above is out of date")
for e in errors:
    print(e, file=sys.stderr)
print(f"monitoring: {len(set(exported.values()))} metrics exported, "
      f"{sum(len(g['rules']) for g in rules['groups'])} alert rules, "
      f"{len(dashboard['panels'])} panels: {'ok' if not errors else 'FAILED'}")
sys.exit(1 if errors else 0)
