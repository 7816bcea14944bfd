# Sourced by scripts/start and scripts/test: make .venv (once) and install the pinned requirements
# (again only when the requirements file changed). Needs nothing but Python 3.11.
set -euo pipefail
req="$1"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
  if ! "$py" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "python3-venv is missing; installing it with apt-get" >&2
      apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
      "$py" -m venv .venv
    else
      echo "Python's venv module is missing: install it (Debian: apt-get install python3-venv) and run this again." >&2
      exit 1
    fi
  fi
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.installed-$(basename "$req")"
want="$(cat requirements*.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q -r "$req"
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
