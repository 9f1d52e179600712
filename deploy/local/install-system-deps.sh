#!/usr/bin/env bash
# Installs what the local stack needs from Debian's packages, only if it is missing:
# redis-server, PostgreSQL, Java 17 + Maven for the Kafka broker (assembled from Maven Central),
# Prometheus for its promtool, which checks and unit-tests deploy/prometheus/rules.yml, and Chromium,
# the browser the console's tests drive with Playwright.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "sluice needs these Debian packages: ${need[*]}; install them as root: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's packages"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian may start its own redis-server, postgresql and prometheus services on install; the local stack
# runs its own, and needs no Prometheus server.
for daemon in redis-server postgresql prometheus; do
  if [[ " ${need[*]} " == *" $daemon "* ]] && command -v service >/dev/null 2>&1; then
    "${as_root[@]}" service "$daemon" stop >/dev/null 2>&1 || true
  fi
done
