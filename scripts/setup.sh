#!/usr/bin/env bash
# Sets up everything keras_invert needs on a fresh Debian/Ubuntu machine:
# VLFeat's C library (the exact reference for HOG/LBP/SIFT) and a virtual
# environment with the pinned requirements. Safe to run again: it only
# installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libvl\.so\.1'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing VLFeat (libvlfeat1) with apt-get..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvlfeat1 >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvlfeat1 >/dev/null
  else
    echo "WARNING: VLFeat (libvl.so.1) is missing and cannot be installed here;" >&2
    echo "         the VLFeat parity tests will fail. Install the libvlfeat1 package." >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtual environment .venv ..."
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements-$(sha1sum requirements.txt pyproject.toml | sha1sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "Installing the pinned requirements (first run: a few minutes)..."
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.requirements-*
  touch "$stamp"
fi
