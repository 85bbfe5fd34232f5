#!/usr/bin/env bash
# Fill .gpu_bundle/ (git-ignored) with what the GPU suite needs on a machine that has PyTorch, Lightning and
# torchmetrics but no network: the wheels of our other imports, and the datasets. benchmarks/gpu_run.sh uses it there.
#
#   DATA_DIR=../shared/data bash benchmarks/gpu_bundle.sh
#
# Wheels for CPython 3.12 (PY_VERSION) on x86-64 Linux, at the versions of requirements.lock, whatever Python runs this.
# Fashion-MNIST's raw IDX files are gzipped (55 MB -> about 30 MB): what travels to the lent machine is capped
# at 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${BUNDLE:-.gpu_bundle}
DATA_DIR=${DATA_DIR:-../shared/data}
PYTHON=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}  # the lent machine's python3
# what src.train, src.eval and src.sample import beyond the lent machine's image (see the device notes' KINDS.md):
# Hydra and its config and parser libraries, torchdata's StatefulDataLoader, pydantic (config checks) and its needs;
# typing_extensions travels too, since pydantic wants a recent one. Not optuna: Hydra only warns that our sweeper
# plugin cannot load, and no sweep runs there.
PACKAGES=(hydra-core omegaconf antlr4-python3-runtime torchdata pydantic pydantic_core annotated-types
          typing-inspection typing_extensions)

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/data/FashionMNIST/raw" "$BUNDLE/data/tinyshakespeare"

for name in "${PACKAGES[@]}"; do
    # the lock's spelling may differ in case and in - against _
    pattern=$(echo "$name" | sed 's/[-_]/[-_]/g')
    if ! pin=$(grep -iE "^${pattern}==" requirements.lock); then
        echo "error: $name is not in requirements.lock" >&2
        exit 1
    fi
    if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$BUNDLE/wheels" "$pin"; then
        # antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as an sdist only: pure Python,
        # so a wheel built here installs there
        echo "no wheel of $pin for CPython $PY_VERSION: building one from its sdist" >&2
        "$PYTHON" -m pip wheel -q --no-deps -w "$BUNDLE/wheels" "$pin"
    fi
done

for path in "$DATA_DIR"/FashionMNIST/raw/*-ubyte; do
    gzip -9 -c "$path" >"$BUNDLE/data/FashionMNIST/raw/$(basename "$path").gz"
done
cp "$DATA_DIR/tinyshakespeare/input.txt" "$BUNDLE/data/tinyshakespeare/"

ls -1 "$BUNDLE/wheels"
tracked=$(git ls-files -z | du -ch --files0-from=- | tail -1 | cut -f1)
echo "bundle: $(du -sh "$BUNDLE" | cut -f1); tracked files: $tracked (together at most 64 MiB travel)"
