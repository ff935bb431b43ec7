#!/usr/bin/env bash
# Install everything the Pons test suite and demo need on a Debian machine:
# DCMTK, Orthanc with its DICOMweb plugin, PostgreSQL (the tests start private
# clusters of it), and a Python venv with pydicom, pynetdicom, dicomweb-client
# and numpy.
#
# Idempotent and quiet: safe to run before every test run. Needs root (or
# sudo) only when Debian packages are missing. Prints at most one line per step.
#
# Environment:
#   PONS_CACHE   cache directory (default: $HOME/.cache/pons); the venv lives
#                in $PONS_CACHE/venv
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PONS_CACHE:-$HOME/.cache/pons}"
venv="$cache/venv"
requirements="$here/requirements.txt"

say() { printf 'install-deps: %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo -n)
fi
apt_updated=0
apt_install() {
    say "apt-get install $*"
    export DEBIAN_FRONTEND=noninteractive
    if ((!apt_updated)); then
        "${sudo[@]}" apt-get update -qq >/dev/null
        apt_updated=1
    fi
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
for p in dcmtk orthanc orthanc-dicomweb postgresql curl openssl; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)

if ((${#missing[@]})); then
    apt_install "${missing[@]}"
    # The orthanc package starts its system service (ports 4242/8042); tests
    # run their own Orthanc instances, so stop and disable it. Tolerate
    # machines without an init system.
    if [[ " ${missing[*]} " == *" orthanc "* ]]; then
        "${sudo[@]}" invoke-rc.d orthanc stop >/dev/null 2>&1 \
            || "${sudo[@]}" service orthanc stop >/dev/null 2>&1 || true
        "${sudo[@]}" update-rc.d orthanc disable >/dev/null 2>&1 || true
        if command -v systemctl >/dev/null 2>&1; then
            "${sudo[@]}" systemctl disable --now orthanc >/dev/null 2>&1 || true
        fi
    fi
    # Likewise the system PostgreSQL cluster: tests run initdb themselves.
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        "${sudo[@]}" invoke-rc.d postgresql stop >/dev/null 2>&1 \
            || "${sudo[@]}" service postgresql stop >/dev/null 2>&1 || true
        "${sudo[@]}" update-rc.d postgresql disable >/dev/null 2>&1 || true
        if command -v systemctl >/dev/null 2>&1; then
            "${sudo[@]}" systemctl disable --now postgresql >/dev/null 2>&1 || true
        fi
    fi
fi

for tool in storescu storescp echoscu findscu movescu getscu Orthanc; do
    command -v "$tool" >/dev/null 2>&1 || { say "missing $tool after install" >&2; exit 1; }
done
[[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] \
    || { say "missing Orthanc DICOMweb plugin" >&2; exit 1; }
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
    || { say "missing PostgreSQL server (/usr/lib/postgresql/*/bin/postgres)" >&2; exit 1; }

# --- Python venv -------------------------------------------------------------
mkdir -p "$cache"
if [[ ! -x "$venv/bin/python" ]]; then
    say "creating venv $venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
fi

stamp="$venv/.pons-requirements.sha256"
want="$( (sha256sum "$requirements"; "$venv/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    say "pip install -r $(basename "$requirements")"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input -r "$requirements"
    printf '%s\n' "$want" >"$stamp"
fi
