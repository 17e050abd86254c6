# Sourced by the setup_*.sh scripts: `peer_venv ENV_DIR PACKAGE...` builds a venv OUTSIDE the repo holding other
# tools (their dependency pins never touch saescope's own venv) on the CPU torch saescope uses, then prints the
# versions installed.
peer_venv() {
    local env_dir="$1"; shift
    "${PYTHON:-python3}" -m venv "$env_dir"
    local pip="$env_dir/bin/python -m pip"
    # torch is pinned to the CPU wheel that saescope uses; any other torch pulls GBs of CUDA.
    printf 'torch==2.13.0\n' > "$env_dir/constraints.txt"
    $pip install --quiet --upgrade pip
    $pip install -c "$env_dir/constraints.txt" torch==2.13.0
    $pip install -c "$env_dir/constraints.txt" "$@"
    # The tools drag in a PyPI torchvision built for another torch; beside the CPU torch it breaks
    # `import transformers` (torchvision::nms is missing), and none of them needs it here.
    $pip uninstall -y torchvision || true
    "$env_dir/bin/python" -c 'import importlib.metadata as md, sys, torch
for name in ("torch", "transformers", *sys.argv[1:]):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: NOT INSTALLED")' "$@"
}
