#!/usr/bin/env bash
# ctest PrometheusRules: the alerting rules load (promtool check rules), their
# unit tests pass (promtool test rules), and the scrape configuration that
# loads them is valid (promtool check config).
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
