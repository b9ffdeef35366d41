# Sourced by the set-up scripts.
find_python() {  # first interpreter of version $1 among PATH and pyenv's installs
  local c
  for c in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1"; do
    if "$c" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$1'.split('.')))" >/dev/null 2>&1; then
      echo "$c"; return 0
    fi
  done
  return 1
}
