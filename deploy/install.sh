#!/usr/bin/env bash
# Install or upgrade Portmon on a Debian node; idempotent (a second run only updates).
#
#   sudo deploy/install.sh central            # web, beat and a general worker
#   sudo deploy/install.sh scanner internal   # sweep worker for sweep.internal + a general worker
#   sudo deploy/install.sh scanner external
#
# Creates the `portmon` system user, copies this checkout to /opt/portmon (PORTMON_PREFIX;
# also PORTMON_DATA_DIR, PORTMON_ETC_DIR, PORTMON_UNIT_DIR for a staged install),
# builds its venv from Debian's python3 (a venv from a Python under /root cannot be run by
# another user), creates /var/lib/portmon and /etc/portmon/portmon.env (from the example,
# never overwritten), installs the systemd units and enables the node's services.
# MariaDB and Redis themselves are not installed here: see docs/deploy.md.
set -euo pipefail

role=${1:-}
zone=${2:-}
case "$role" in
  central) ;;
  scanner)
    case "$zone" in
      internal|external) ;;
      *) echo "install.sh: scanner needs a zone: internal or external" >&2; exit 2 ;;
    esac ;;
  *) echo "usage: install.sh central | install.sh scanner internal|external" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (it creates a user and units)" >&2; exit 1; }

src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PORTMON_PREFIX:-/opt/portmon}
data=${PORTMON_DATA_DIR:-/var/lib/portmon}
etc=${PORTMON_ETC_DIR:-/etc/portmon}
units=${PORTMON_UNIT_DIR:-/etc/systemd/system}
start=${PORTMON_START:-1}   # 0: install and enable only, start nothing (image builds)

packages=(python3 python3-venv python3-dev build-essential pkg-config
          default-libmysqlclient-dev nmap iproute2 rsync)
[ "$role" = scanner ] && packages+=(masscan)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q >/dev/null || echo "install.sh: apt-get update failed; trying anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

getent group portmon >/dev/null || groupadd --system portmon
getent passwd portmon >/dev/null ||
  useradd --system --gid portmon --home-dir "$data" --no-create-home \
    --shell /usr/sbin/nologin --comment "Portmon services" portmon

# Code: root-owned and read-only to the services; the data dir is the one writable place.
install -d -m 0755 -o root -g root "$prefix"
if [ "$src" != "$prefix" ]; then
  rsync -a --delete --exclude .git --exclude .venv --exclude var --exclude '__pycache__' \
    "$src/" "$prefix/"
fi
if [ ! -x "$prefix/.venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$prefix/.venv"
fi
"$prefix/.venv/bin/pip" install -q --disable-pip-version-check -r "$prefix/requirements.txt" 2>&1 |
  { grep -v "^WARNING: Location" >&2 || true; }
install -d -m 0750 -o portmon -g portmon "$data"

install -d -m 0750 -o root -g portmon "$etc"
if [ ! -f "$etc/portmon.env" ]; then
  install -m 0640 -o root -g portmon "$prefix/deploy/portmon.env.example" "$etc/portmon.env"
  echo "install.sh: edit $etc/portmon.env (DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY, ...)"
fi

for unit in portmon-web.service portmon-worker.service portmon-beat.service \
            portmon-sweep@.service; do
  # The units name the default paths; another prefix or data dir is written into them.
  sed -e "s#/opt/portmon#$prefix#g" -e "s#/var/lib/portmon#$data#g" \
      -e "s#/etc/portmon/#$etc/#g" "$prefix/deploy/$unit" > "$units/$unit.tmp"
  chmod 0644 "$units/$unit.tmp"
  mv "$units/$unit.tmp" "$units/$unit"
done

case "$role" in
  central) enable=(portmon-web.service portmon-beat.service portmon-worker.service) ;;
  scanner) enable=("portmon-sweep@sweep.$zone.service" portmon-worker.service) ;;
esac

manage() {  # manage.py as the service user, with the units' environment
  (
    # EnvironmentFile syntax is KEY=VALUE with no shell quoting (a URL's & and ? stay as
    # they are), so export line by line instead of sourcing the file.
    export PORTMON_DATA_DIR="$data"
    while IFS= read -r line; do
      [[ $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] && export "$line"
    done < "$etc/portmon.env"
    cd "$prefix" && runuser -u portmon -- "$prefix/.venv/bin/python" manage.py "$@"
  )
}

if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable "${enable[@]}"
  if [ "$start" = 1 ] && ! grep -q CHANGE-ME "$etc/portmon.env"; then
    if [ "$role" = central ]; then
      manage migrate --noinput
      manage collectstatic --noinput -v 0
    fi
    systemctl restart "${enable[@]}"
    manage doctor --warn-only
  else
    echo "install.sh: services enabled, not started: fill in $etc/portmon.env, then"
    echo "  systemctl restart ${enable[*]}"
  fi
else
  echo "install.sh: no running systemd here; units are in $units (enable: ${enable[*]})"
fi
