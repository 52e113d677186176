# Shared settings of the scripts: one target directory and one venv outside
# the clone, reused across checkouts (and by CI on the same machine).
export SH_CACHE="${SH_CACHE:-$HOME/.cache/streamhouse}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SH_CACHE/target}"
export SH_VENV="${SH_VENV:-$SH_CACHE/venv}"
