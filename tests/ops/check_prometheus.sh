#!/usr/bin/env bash
# ctest PrometheusRules: the alerting rules load (promtool check rules), their
# unit tests pass (promtool test rules), the scrape configuration that loads
# them is valid (promtool check config), and every query of the Grafana
# dashboard is valid PromQL (each becomes a recording rule for promtool,
# with the dashboard's variables filled in).
#
# usage: check_prometheus.sh PROMETHEUS_DIR
#
# Without promtool (Debian package `prometheus`, installed by ./dev deps) the
# test fails under CI (CI=true), where a pass would hide that the rules were
# never checked; elsewhere it exits 77, which ctest reports as skipped.
set -euo pipefail

dir="${1:?usage: check_prometheus.sh PROMETHEUS_DIR}"

if ! command -v promtool >/dev/null; then
  if [[ "${CI:-}" == true ]]; then
    echo "promtool not found, and CI=true: install the Debian package" \
      "prometheus (./dev deps does)" >&2
    exit 1
  fi
  echo "SKIPPED: promtool not found; install the Debian package prometheus" \
    "(./dev deps) to check prometheus/alerts.yml"
  exit 77
fi

cd "$dir"
promtool check rules alerts.yml
promtool test rules alerts_test.yml
promtool check config prometheus.yml

rules="$(mktemp --suffix=.yml)"
trap 'rm -f "$rules"' EXIT
python3 - grafana-dashboard.json >"$rules" <<'PY'
import json, sys

queries = []


def walk(panel):
    for t in panel.get("targets", []):
        queries.append((panel["title"], t["expr"]))
    for p in panel.get("panels", []):
        walk(p)


for p in json.load(open(sys.argv[1]))["panels"]:
    walk(p)
if not queries:
    sys.exit("grafana-dashboard.json: no queries found")
print("groups:\n  - name: dashboard\n    rules:")
for i, (title, expr) in enumerate(queries):
    expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
    print(f"      # {title}")
    print(f"      - record: dashboard:query_{i}")
    print(f"        expr: {json.dumps(expr)}")
PY
echo "Dashboard queries:"
promtool check rules "$rules"
