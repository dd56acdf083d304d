#!/usr/bin/env bash
# Installs the system packages the project needs: espeak-ng (required: synthetic speech for the demo
# corpus and the tests) and flite (optional second synthesiser). Debian/Ubuntu via apt-get.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v flite >/dev/null 2>&1 || need+=(flite)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo"
else
  sudo="none"
fi
if command -v apt-get >/dev/null 2>&1 && [ "$sudo" != none ]; then
  echo "installing system packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "ERROR: espeak-ng is required. Install it with your package manager, e.g.:" >&2
  echo "  sudo apt-get install espeak-ng flite" >&2
  exit 1
fi
echo "note: flite not found; the demo corpus will use espeak-ng voices only" >&2
