"""Installable without a clone: the wheel carries the MATLAB toolbox as bridge/toolbox, ``python -m
bridge.matlab_path`` prints it, and the toolbox works from there (hessiancoreSetup finds the installed
bridge, a wrapper computes the Hessian) with no checkout on any path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from octave_session import unpack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, unpacked as site-packages would hold it."""
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT, build / "src", ignore=shutil.ignore_patterns(".venv", "build", "*.egg-info", ".git",
                                                                       "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(build / "src"), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True, capture_output=True, timeout=300)
    wheel, = out.glob("hessiancore-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    return site, names


def _env(site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HESSIANCORE_")}
    env["PYTHONPATH"] = str(site)
    return env


def test_wheel_ships_every_toolbox_file(installed):
    _, names = installed
    shipped = {n[len("bridge/toolbox/"):] for n in names if n.startswith("bridge/toolbox/")}
    toolbox = ROOT / "matlab"
    expected = {str(p.relative_to(toolbox)).replace(os.sep, "/") for p in toolbox.rglob("*") if p.is_file()}
    assert shipped == expected
    assert "private/hcParseOptions.m" in shipped and "resources/functionSignatures.json" in shipped


def test_matlab_path_prints_the_installed_folder(installed, tmp_path):
    site, _ = installed
    out = subprocess.run([sys.executable, "-m", "bridge.matlab_path"], capture_output=True, text=True, cwd=tmp_path,
                         env=_env(site), timeout=60, check=True).stdout.strip()
    assert Path(out) == site / "bridge" / "toolbox"
    setup = subprocess.run([sys.executable, "-m", "bridge.matlab_path", "--setup"], capture_output=True, text=True,
                           cwd=tmp_path, env=_env(site), timeout=60, check=True).stdout
    assert setup.startswith(f"addpath('{out}'); hessiancoreSetup('Python', '{sys.executable}')")


def test_installed_toolbox_runs_from_its_folder(installed, tmp_path):
    octave = shutil.which("octave-cli")
    if octave is None:
        if os.environ.get("CI"):
            pytest.fail("octave-cli is not installed (CI is set: the MATLAB toolbox tests must run)")
        pytest.skip("octave-cli is not installed")
    site, _ = installed
    toolbox = site / "bridge" / "toolbox"
    driver = tmp_path / "driver.m"
    driver.write_text(
        f"addpath('{toolbox}'); addpath('{ROOT / 'tests' / 'octave'}');\n"
        f"info = hessiancoreSetup('Python', '{sys.executable}', 'Save', false, 'Verbose', false);\n"
        "rand('state', 2); randn('state', 2);\n"
        "net = dlnetwork([featureInputLayer(2) fullyConnectedLayer(2) tanhLayer fullyConnectedLayer(1)]);\n"
        "X = randn(2, 4); T = randn(1, 4); spec = dlnetworkToSpec(net);\n"
        "H = dlhessian(net, dlarray(X, 'CB'), dlarray(T, 'CB'));\n"
        "ok = info.Ok; bridgePath = fileparts(fileparts(which('dlhessian')));\n"
        "theta = cellfun(@(v) v(:), spec.Learnables.Value, 'UniformOutput', false); theta = vertcat(theta{:});\n"
        "sizes = cellfun(@size, spec.Learnables.Value, 'UniformOutput', false);\n"
        "save('-v7', 'out.mat', 'ok', 'H', 'X', 'T', 'theta', 'sizes', 'bridgePath');\n")
    env = {**_env(site), "HESSIANCORE_PYTHON": sys.executable}  # what hessiancoreSetup would have saved
    proc = subprocess.run([octave, "--no-gui", "--quiet", "--no-init-file", str(driver)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = scipy.io.loadmat(tmp_path / "out.mat", simplify_cells=True)
    assert out["ok"] and Path(out["bridgePath"]) == site / "bridge"
    theta = torch.as_tensor(out["theta"], dtype=torch.float64)
    shapes = [tuple(int(n) for n in s) for s in out["sizes"]]
    X, T = torch.as_tensor(out["X"]), torch.as_tensor(out["T"])

    def loss(th):
        W1, b1, W2, b2 = unpack(th, shapes)
        return ((W2 @ torch.tanh(W1 @ X + b1) + b2 - T) ** 2).sum() / 8

    np.testing.assert_allclose(out["H"], torch.autograd.functional.hessian(loss, theta).numpy(), rtol=1e-9,
                               atol=1e-12)
