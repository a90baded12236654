"""ONNX Runtime and FAISS come from one of two extras, `cpu` or `gpu` (their CPU and CUDA builds install the same
modules). Without them `import featstore` and `featstore models list` still work, and whatever needs one stops
with one line naming both extras; the extras themselves never pull both builds."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE

ROOT = Path(__file__).parents[1]


def featstore_without(module: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    """The featstore CLI in a child process in which `module` cannot be imported (as if not installed)."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "import featstore\n"
            "from featstore.cli.main import main\n"
            f"sys.argv = ['featstore', *{list(args)!r}]\n"
            "main()\n")
    env = {"FEATSTORE_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("module, what", [("onnxruntime", "ONNX Runtime"), ("faiss", "FAISS")])
def test_missing_runtime_is_one_line_naming_both_extras(tmp_path, module, what):
    folder = tmp_path / "flowers"
    for photo in sorted(SAMPLE.rglob("*.jpg"))[:3]:
        (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / photo.parent.name / photo.name).write_bytes(photo.read_bytes())

    listed = featstore_without(module, "models", "list", home=tmp_path / "home")
    assert listed.returncode == 0, listed.stderr
    assert "efficientnet-lite0" in listed.stdout

    r = featstore_without(module, "embed", str(folder), "--store", str(tmp_path / "s"), "--no-progress",
                          home=tmp_path / "home")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert what in lines[0] and "not installed" in lines[0]
    assert '".[cpu]"' in lines[0] and '".[gpu]"' in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()                    # refused before a store was made


def test_missing_runtime_from_python_is_a_featstore_error():
    code = ("import sys; sys.modules['onnxruntime'] = None; sys.modules['faiss'] = None\n"
            "import featstore\n"
            "from featstore import runtimes\n"
            "from featstore.models.session import providers\n"
            "for call in (runtimes.onnxruntime, runtimes.faiss, lambda: providers('auto')):\n"
            "    try:\n"
            "        call()\n"
            "    except featstore.FeatstoreError as exc:\n"
            "        print(exc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and all('".[cpu]"' in line and '".[gpu]"' in line for line in lines), r.stdout
    assert all("ONNX Runtime (onnxruntime) and FAISS (faiss) are not installed" in line for line in lines)


def test_a_broken_runtime_is_not_reported_as_missing(monkeypatch):
    """Only the module itself missing is 'not installed'; a module it fails to import is its own error."""
    import importlib

    from featstore import runtimes

    def broken(name):
        raise ModuleNotFoundError("No module named 'onnxruntime.capi._pybind_state'",
                                  name="onnxruntime.capi._pybind_state")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="_pybind_state"):
        runtimes.onnxruntime()


def test_both_builds_installed_says_so(monkeypatch):
    """--device cuda where the CPU build of ONNX Runtime was installed beside the GPU one (cpu and gpu extras)."""
    from featstore.errors import FeatstoreError
    from featstore.models import session

    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    monkeypatch.setattr(session, "both_builds", lambda cpu, gpu: (cpu, gpu) == ("onnxruntime", "onnxruntime-gpu"))
    with pytest.raises(FeatstoreError, match="both installed.*pip uninstall -y onnxruntime onnxruntime-gpu"):
        session.providers("cuda")


def test_extras_hold_one_build_each():
    """The runtimes are in no core requirement; `cpu` and `gpu` each bring one build of each (the gpu one all on
    CUDA 13); README's set-up commands install the cpu extra."""
    tomllib = pytest.importorskip("tomllib")
    Requirement = pytest.importorskip("packaging.requirements").Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {Requirement(r).name.lower() for r in reqs}   # noqa: E731
    builds = {"onnxruntime", "onnxruntime-gpu", "faiss-cpu", "faiss-gpu", "faiss-gpu-cuvs", "faiss-gpu-cu12"}
    extras = project["optional-dependencies"]
    assert not names(project["dependencies"]) & builds
    assert names(extras["cpu"]) & builds == {"onnxruntime", "faiss-cpu"}
    assert names(extras["gpu"]) & builds == {"onnxruntime-gpu", "faiss-gpu-cuvs"}
    assert not any(name.endswith("-cu12") for name in names(extras["gpu"]))
    for extra, reqs in extras.items():
        if extra not in ("cpu", "gpu"):
            assert not names(reqs) & builds, extra
    readme = (ROOT / "README.md").read_text()
    for marker in ("# 1. set up and run the main job", "# 2. set up and run the tests"):
        command = readme.split(marker, 1)[1].splitlines()[1]
        assert 'pip install -c constraints.txt -e ".[cpu' in command, command
