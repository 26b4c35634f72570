#!/bin/bash
# Packs what benchmarks/device_check.sh needs on a lent GPU machine, which gets the repository
# alone and cannot reach a package registry. Run it here, from the main checkout (the one the
# device tool sends), then make the one device call its last line prints.
#
#   bash benchmarks/device_prepare.sh
#
# .whl/: umap-learn and pynndescent, the two dependencies the machine's image lacks (both pure
# Python; numba, scikit-learn and torch are there), at the versions installed here.
# .devdata/: the CIFAKE zip from ../shared/data. Both are ignored through .git/info/exclude.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-common-dir)/info/exclude"
for folder in /.whl/ /.devdata/; do
    grep -sqxF "$folder" "$exclude" || echo "$folder" >>"$exclude"
done
data="${AEGMM_SHARED_DATA:-../shared/data}"
if [ ! -f "$data/cifake_train_20k.zip" ]; then
    echo "device_prepare: expected $data/cifake_train_20k.zip (the shared data), found none" >&2
    exit 1
fi
version() { python3 -c "from importlib.metadata import version; print(version('$1'))"; }
rm -rf .whl .devdata
mkdir -p .whl .devdata
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "umap-learn==$(version umap-learn)" "pynndescent==$(version pynndescent)"
cp "$data/cifake_train_20k.zip" .devdata/
du -sh .whl .devdata
echo 'then: run(command="bash benchmarks/device_check.sh", carry=[".whl", ".devdata"], timeout_s=560)'
