#!/usr/bin/env bash
# Makes the real Fashion-MNIST available offline through Debian's dataset-fashion-mnist
# package (IDX files in /usr/share/datasets/fashion-mnist), which evae_tf.data.sources finds by itself.
#
# Idempotent: does nothing when the four IDX files are already in either place evae_tf.data.sources
# searches. Never fails hard: without apt or root it prints what to do and exits 0, and the
# Python side reports the real error if the data is still missing when it is needed.
set -u

DEBIAN_DIR=/usr/share/datasets/fashion-mnist
KERAS_DIR="${HOME:-/root}/.keras/datasets/fashion-mnist"
PACKAGE=dataset-fashion-mnist
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

say() { printf 'ensure-data: %s\n' "$*"; }

has_idx_files() {
    local dir=$1 f
    for f in $FILES; do
        [ -f "$dir/$f" ] || [ -f "$dir/$f.gz" ] || return 1
    done
}

advise() {
    say "$1"
    say "to use the real Fashion-MNIST offline, run as root: apt-get install $PACKAGE"
    say "or pass --data-dir / set EVAE_DATA_DIR to a directory with the four IDX files"
    say "(or a prepared TFDS copy); with internet access TFDS downloads the data itself."
}

for dir in "$DEBIAN_DIR" "$KERAS_DIR"; do
    if has_idx_files "$dir"; then
        say "Fashion-MNIST IDX files found in $dir"
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    advise "apt-get not available; not installing $PACKAGE."
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    advise "not root and sudo needs a password; not installing $PACKAGE."
    exit 0
fi

# Refresh the package lists only when apt does not know the package yet.
if ! apt-cache show "$PACKAGE" >/dev/null 2>&1; then
    say "updating the package lists"
    ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq || say "apt-get update failed; trying the install anyway"
fi

say "installing $PACKAGE"
if ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PACKAGE" \
    && has_idx_files "$DEBIAN_DIR"; then
    say "Fashion-MNIST IDX files installed in $DEBIAN_DIR"
else
    advise "installing $PACKAGE failed (no network or no such package in this distribution?)."
fi
exit 0
