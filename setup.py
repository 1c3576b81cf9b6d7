"""Build hook: ship the MATLAB toolbox (matlab/) inside the Python package, as bridge/toolbox.

Everything else is declared in pyproject.toml. ``pip install .`` (or a wheel) then carries the .m files,
and ``python -m bridge.matlab_path`` prints the folder a MATLAB user adds to the path. In a checkout (and
an editable install) the toolbox is used from matlab/ directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TOOLBOX = Path(__file__).resolve().parent / "matlab"


class BuildPyWithToolbox(build_py):
    def run(self):
        super().run()
        if not TOOLBOX.is_dir():  # an sdist without matlab/ (MANIFEST.in includes it)
            raise RuntimeError(f"the MATLAB toolbox folder {TOOLBOX} is missing")
        target = Path(self.build_lib) / "bridge" / "toolbox"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(TOOLBOX, target, ignore=shutil.ignore_patterns("*.asv", "*~", "octave-workspace"))


setup(cmdclass={"build_py": BuildPyWithToolbox})
