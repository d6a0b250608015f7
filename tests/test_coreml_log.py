"""Our command lines keep the Core ML stack's Linux noise out of their output (ane_vit.coreml_log).

Noise: coremltools' "Failed to load _MLModelProxy" records and version warnings, torchao's
"Failed to load .../torchao/_C*.so", torch's pytree note about torchao's enums, and the
conversion passes' progress bars. A real export and a real analysis run as subprocesses
(the records are logged when coremltools is first imported, so only a fresh process shows them).
"""

import importlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ane_vit.coreml_log import quiet_native_library_warnings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def quiet(monkeypatch):
    """``quiet_native_library_warnings`` in this process, undone afterwards (filters and tqdm)."""
    import tqdm.std

    monkeypatch.setattr(tqdm.std.tqdm, "__init__", tqdm.std.tqdm.__dict__["__init__"])
    for name in ("coremltools", "torchao", "torch.utils._pytree"):
        monkeypatch.setattr(logging.getLogger(name), "filters", list(logging.getLogger(name).filters))
    quiet_native_library_warnings()
    quiet_native_library_warnings()  # idempotent: one filter, one wrapper
    yield
    if "_ane_vit_quiet" in tqdm.std.tqdm.__dict__:
        del tqdm.std.tqdm._ane_vit_quiet


def test_real_export_and_analysis_print_only_what_they_did(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("TQDM_DISABLE", None)  # a user's shell: the command line itself must hide the bars
    export = subprocess.run(
        [sys.executable, "-m", "ane_vit.export", "--arch", "micro-moat", "--size", "32", "32", "--attention-mode", "global",
         "--pe-type", "LePE_FUSED", "--num-classes", "10", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600)
    assert export.returncode == 0, export.stderr
    assert export.stderr == ""  # no version warnings, no "Failed to load", no progress bars
    (line,) = export.stdout.splitlines()
    assert line.startswith("[1/1] ") and ".mlpackage" in line
    (path,) = tmp_path.glob("*.mlpackage")
    analysis = subprocess.run([sys.executable, "-m", "ane_vit.analysis", str(path), "--top", "1"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert analysis.returncode == 0, analysis.stderr
    assert analysis.stdout.startswith("ML Program: ") and analysis.stderr == ""


def test_filter_drops_exactly_the_listed_records(caplog, quiet):
    records = [
        ("coremltools", "Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'", False),
        ("coremltools", "Failed to load _MLCPUComputeDeviceProxy: No module named 'coremltools.libcoremlpython'", False),
        ("coremltools", "Torch version 2.13.0+cpu has not been tested with coremltools. You may run into unexpected errors. "
                        "Torch 2.7.0 is the most recent version that has been tested.", False),
        ("coremltools", "scikit-learn version 1.9.1 is not supported. Minimum required version: 0.17. Maximum required version: "
                        "1.5.1. Disabling scikit-learn conversion API.", False),
        ("torchao", "Failed to load /venv/lib/python3.11/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: "
                    "Could not load this library", False),
        ("torch.utils._pytree", "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile "
                                "as an opaque value type.", False),
        # information about the user's run stays
        ("coremltools", "Invalid block_sizes; On 1th axis, the dim size 1 is not divisible by block size 32.", True),
        ("coremltools", "TensorFlow version 2.20.0 has not been tested with coremltools.", True),
        ("coremltools", "Failed to load the model: the file is not a program", True),
        ("torchao", "Failed to load config for int4", True),
        ("torch.utils._pytree", "register_pytree_node is deprecated", True),
    ]
    with caplog.at_level(logging.WARNING):
        for name, message, _ in records:
            logging.getLogger(name).warning(message)
    assert [r.getMessage() for r in caplog.records] == [m for _, m, kept in records if kept]
    for name in ("coremltools", "torchao", "torch.utils._pytree"):
        assert sum(type(f).__name__ == "_NativeLibraryFilter" for f in logging.getLogger(name).filters) == 1


def test_progress_bars_are_hidden_unless_asked_for(quiet):
    import io

    import tqdm
    import tqdm.auto

    out = io.StringIO()
    for _ in tqdm.tqdm(range(3), desc="Running MIL default pipeline", file=out):
        pass
    assert out.getvalue() == ""  # coremltools' passes: no bar
    for _ in tqdm.auto.tqdm(range(3), desc="epoch 1/1", file=out, disable=False):
        pass
    assert "epoch 1/1" in out.getvalue()  # the digits training bar asks for itself


@pytest.mark.parametrize("module, argv", [
    ("ane_vit.export.cli", ["--help"]),
    ("ane_vit.digits.cli", ["--help"]),
    ("ane_vit.analysis.cli", ["--top", "-1", "no-such.mlpackage"]),
    ("ane_vit.analysis.cli", ["--rules"]),  # the rules path converts too (its survey)
    ("ane_vit.bench.cli", ["--help"]),
    ("ane_vit.compress.cli", ["--help"]),
])
def test_every_command_line_quiets_the_noise_before_its_work(module, argv, monkeypatch, capsys):
    mod = importlib.import_module(module)
    calls = []
    monkeypatch.setattr(mod, "quiet_native_library_warnings", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        mod.main(argv)
    assert calls == [1]


def test_a_ctrl_c_during_the_import_is_raised_after_it_not_swallowed(tmp_path, monkeypatch):
    # coremltools imports optional dependencies inside bare `except:` blocks: a Ctrl-C there
    # was swallowed and the command went on to write its files.
    from ane_vit.coreml_log import import_coremltools

    (tmp_path / "swallows_ctrl_c.py").write_text(
        "import os, signal, time\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while an optional dependency loads\n"
        "    time.sleep(0.05)\n"
        "except:  # noqa: E722, as in coremltools/_deps\n"
        "    pass\n"
        "LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # an interactive run (xdist workers ignore SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            import_coremltools("swallows_ctrl_c")
        assert sys.modules.pop("swallows_ctrl_c").LOADED  # the import itself finished
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a process that ignores Ctrl-C goes on ignoring it
        assert import_coremltools("swallows_ctrl_c").LOADED
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)
        sys.modules.pop("swallows_ctrl_c", None)


def test_the_commands_that_convert_import_coremltools_interruptibly(tmp_path, monkeypatch):
    import ane_vit.export.cli as export_cli

    calls = []
    monkeypatch.setattr(export_cli, "import_coremltools", lambda: calls.append("import"))
    monkeypatch.setattr("ane_vit.export.save.export_moat", lambda **kw: calls.append("export") or tmp_path / "x.mlpackage")
    monkeypatch.setattr(export_cli, "package_nbytes", lambda p: 1)
    export_cli.main(["--arch", "micro-moat", "--size", "64", "64", "--attention-mode", "global", "--output-dir", str(tmp_path)])
    assert calls == ["import", "export"]
