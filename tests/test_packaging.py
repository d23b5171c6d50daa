"""What `python -m build` makes of the checkout: an sdist, and from it the wheel that `pip install`
puts in site-packages. The installed commands read their configs from the wheel, so every file of
conf/ must be in it. (.ci/check_wheel installs the wheel in a fresh venv and runs the commands.)"""

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SDIST = "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])"


def run(*cmd: str, cwd: Path | None = None) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}: exit {result.returncode}\n{result.stderr[-3000:]}"


def build(out: Path) -> None:
    """The sdist of the checkout and the wheel built from it, into out (a few seconds). One test builds:
    two builds in the checkout at once would share its temporary release tree and egg-info."""
    run(sys.executable, "-c", SDIST, str(out), cwd=PROJECT)
    (sdist,) = out.glob("*.tar.gz")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(sdist))


def files(folder: str, pattern: str) -> set[str]:
    return {p.relative_to(PROJECT).as_posix() for p in (PROJECT / folder).rglob(pattern) if p.is_file()}


def test_the_sdist_holds_the_sources_and_its_wheel_every_config_the_code_and_the_classifier_weights(tmp_path):
    build(tmp_path)
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = {Path(name).parts[1] for name in tar.getnames() if len(Path(name).parts) > 1}
    # no outputs, tests or docs
    assert top == {"conf", "gan_lightning", "hydra_plugins", "README.md", "pyproject.toml", "MANIFEST.in", "PKG-INFO", "setup.cfg",
                   "gan_lightning.egg-info"}

    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        held = {name for name in zf.namelist() if ".dist-info/" not in name}
        configs = {name: zf.read(name) for name in held if name.startswith("gan_lightning/conf/")}
    expected_configs = {f"gan_lightning/{name}": (PROJECT / name).read_bytes() for name in files("conf", "*")}
    assert set(configs) == set(expected_configs)  # every file under conf/, where gan_lightning.train looks for it
    assert configs == expected_configs  # unchanged
    code = files("gan_lightning", "*.py") | files("hydra_plugins", "*.py")
    weights = {"gan_lightning/metrics/mnist_classifier.pt", "gan_lightning/metrics/mnist_classifier.json"}
    assert held == set(expected_configs) | code | weights
