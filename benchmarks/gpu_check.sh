#!/usr/bin/env bash
# The CuPy path on a real GPU, unattended, on a machine with no network: install, the
# CuPy test matrix, the GPU benchmark, the extra GPU figures and notebook 04, with every
# log and figure written to one results folder.
#
#   benchmarks/gpu_check.sh RESULTS_DIR            # from the repository root
#   QUICK=1 benchmarks/gpu_check.sh /tmp/dry       # a dry run of the logic (small sizes; --cpu where no GPU)
#
# What the machine's image lacks travels as wheels in .whl/ (git-ignored), made on a
# machine with network by `benchmarks/gpu_check.sh --fetch-wheels`: array-api-compat and
# array-api-strict (the tests), nbclient and ipykernel with their needs (notebook 04),
# and a wheel of arrayopt itself as a fallback should building from the source fail there.
# Each stage has its own time limit and the script always goes on to the next one; the
# summary says what each stage returned.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ "${1:-}" = "--fetch-wheels" ]; then
    rm -rf .whl && mkdir -p .whl/deps .whl/self
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl/deps \
        array-api-compat array-api-strict nbclient nbformat ipykernel
    # already on the GPU image (CUDA image, Python 3.12): keep its own versions
    (cd .whl/deps && rm -f numpy-* psutil-* packaging-* attrs-* typing_extensions-* pygments-* python_dateutil-* six-*)
    python3 -m pip wheel -q --no-deps -w .whl/self .
    du -sh .whl
    exit 0
fi

out="$(mkdir -p "${1:-gpu_results}" && cd "${1:-gpu_results}" && pwd)"
quick="${QUICK:-0}"
site="${SITE:-/tmp/arrayopt-site}"
summary="$out/summary.txt"
: >"$summary"
note() { echo "== $(date +%T) $*" | tee -a "$summary"; }
stage() { # stage NAME SECONDS LOGFILE COMMAND...: run with a time limit, record the exit status
    local name="$1" seconds="$2" logfile="$3"
    shift 3
    local start=$SECONDS
    note "$name (limit ${seconds} s)"
    timeout --kill-after=10 "$seconds" "$@" >"$logfile" 2>&1
    local rc=$?
    note "$name: exit $rc after $((SECONDS - start)) s$([ $rc -eq 124 ] && echo ' (TIMED OUT)')"
    tail -n 5 "$logfile" | sed 's/^/    /' >>"$summary"
}

note "install into $site"
rm -rf "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/deps/*.whl \
    >"$out/install.log" 2>&1 || note "installing the wheels failed (see install.log)"
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" . \
    >>"$out/install.log" 2>&1; then
    note "building arrayopt from the source failed; installing .whl/self"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/self/*.whl >>"$out/install.log" 2>&1
fi
export PYTHONPATH="$site"
export PYTHONUNBUFFERED=1
(cd / && python3 - <<'EOF') 2>&1 | tee -a "$summary"
import platform, numpy, arrayopt, arrayopt.backends
print("python", platform.python_version(), "numpy", numpy.__version__, "arrayopt", arrayopt.__file__)
for name in ("cupy", "torch", "numba", "scipy", "array_api_strict", "nbclient"):
    try:
        module = __import__(name)
        print(" ", name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(" ", name, "MISSING:", exc)
try:
    import cupy
    print("  CUDA devices:", cupy.cuda.runtime.getDeviceCount(), cupy.cuda.runtime.getDeviceProperties(0)["name"])
except Exception as exc:
    print("  no CUDA device:", exc)
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv >>"$summary" 2>&1

gpu=1
python3 -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" 2>/dev/null || gpu=0
workers=$(($(nproc) > 16 ? 16 : $(nproc)))

# 1. the CuPy test matrix: every test parametrised over cupy and every cuda-marked test
#    (live-torch tests excluded: the image's torch is not the reference version)
stage "tests: CuPy matrix" "${TEST_SECONDS:-180}" "$out/tests.log" \
    env ARRAYOPT_TEST_BACKENDS=numpy,cupy python3 -P -m pytest -m "cuda and not ref" -q -rfE \
    -p no:cacheprovider -n "$workers" --timeout 150 --junitxml="$out/tests.xml"

# 2. the benchmark (CuPy against torch's fused CUDA optimizers, and the copy bandwidth)
bench_args=(--gpu --workloads gpu-1x256M,gpu-1000x256K,gpu-10000x1.6K --rounds 5 --batch 0.2)
[ "$quick" = 1 ] && bench_args=(--gpu --workloads gpu-10000x1.6K --quick)
stage "benchmark" "${BENCH_SECONDS:-150}" "$out/bench.md" \
    python3 -P -m arrayopt.bench "${bench_args[@]}" --json "$out/bench.json"

# 3. half precision, CUDA graphs, LBFGS at n = 1e7
extra_args=()
[ "$quick" = 1 ] && extra_args+=(--quick)
[ "$gpu" = 0 ] && extra_args+=(--cpu)
stage "extra GPU figures" "${EXTRA_SECONDS:-100}" "$out/gpu_extra.log" \
    python3 -P benchmarks/gpu_extra.py "${extra_args[@]}" --json "$out/gpu_extra.json"

# 4. notebook 04, executed (on CuPy where there is a GPU)
stage "notebook 04" "${NOTEBOOK_SECONDS:-80}" "$out/notebook.log" \
    python3 -P notebooks/build.py --execute 04_gpu_pipeline
cp notebooks/04_gpu_pipeline.ipynb "$out/" 2>/dev/null || note "no notebook written"

# everything in one archive too (the results folder may be limited to a few files)
(cd "$out" && tar czf logs.tgz --exclude=logs.tgz --exclude='*.ipynb' ./*)
note "done"
