"""Probe the command lines of issue 16's command-line side as a demanding new user would (run by hand).

Each probe is one invocation, run as a subprocess in its own temporary folder against the
checkout given by ``--repo`` (default: this one): a command line (``python -m ane_vit...``)
or a few lines of Python calling the public API. Its answer is classified:

* ``clear``: it did what was asked and said so truthfully, or it refused with a one-line
  message that names the flag/file/key at fault and what to do (no traceback);
* ``silent``: exit 0 (or no exception) with a wrong, empty or untruthful result;
* ``obscure``: a library traceback, a message that does not name what is wrong, library
  noise on the output, or a command the README gives that fails as written;
* ``data-loss``: a file or a parameter that existed before is gone or changed unasked.

Run from the repository root with the environment of the tests; the "before" counts come
from running it against the main checkout (the same interpreter, that checkout's code):

    .venv/bin/python .ci/probe_cli_args.py                    # this checkout
    .venv/bin/python .ci/probe_cli_args.py --repo /work/main  # another checkout (read only)
    .venv/bin/python .ci/probe_cli_args.py --list             # the probes, without running them
    .venv/bin/python .ci/probe_cli_args.py digits-nan seed-meta-last --json out.json

Some probes run real work (a digits evaluation on 10 images, a small export with 30
enumerated sizes): about 10-20 minutes in all on 2 busy cores. Nothing is written into the
checkout (``PYTHONDONTWRITEBYTECODE``; every output goes to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = ("clear", "silent", "obscure", "data-loss")
# Lines of library noise that no command line of ours may print.
NOISE = re.compile(
    r"Failed to load _ML\w*Proxy|Failed to load .*torchao|has not been tested with coremltools|"
    r"scikit-learn version .* is not supported|is an Enum subclass and is now natively supported|"
    r"Running MIL |Converting PyTorch Frontend|Running compression pass"
)


@dataclass
class Run:
    rc: int | None  # None: killed at the time-out
    out: str
    err: str
    folder: Path
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.err

    def last_line(self) -> str:
        lines = [x for x in self.err.strip().splitlines() if x.strip()]
        return lines[-1][:300] if lines else ""


@dataclass
class Probe:
    name: str
    area: str
    what: str
    setup: Callable[[Path], None]
    argv: Callable[[Path], list[str]]  # "-m ..." or "-c ..." arguments of python
    classify: Callable[[Run], tuple[str, str]]
    timeout: float = 900.0
    env: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _py(code: str) -> Callable[[Path], list[str]]:
    return lambda d: ["-c", textwrap.dedent(code)]


def _m(*args: str) -> Callable[[Path], list[str]]:
    return lambda d: ["-m", *(a.replace("{d}", str(d)) for a in args)]


def _nothing(_: Path) -> None:
    pass


def _refused(run: Run, *words: str, forbid_after: str | None = None) -> tuple[str, str]:
    """A refusal is clear if it exits non-zero, has no traceback and names every word."""
    if run.rc == 0:
        return "silent", "exit 0"
    if run.rc is None:
        return "obscure", "still running at the time-out"
    missing = [w for w in words if w.lower() not in run.err.lower()]
    if run.traceback or missing:
        return "obscure", run.last_line() + (f" [does not name {missing}]" if missing else "")
    return "clear", run.last_line()


def _noise(run: Run) -> list[str]:
    return [x for x in run.text.splitlines() if NOISE.search(x)]


def _quiet(run: Run) -> tuple[str, str]:
    noise = _noise(run)
    if run.rc != 0:
        return "obscure", f"exit {run.rc}: {run.last_line()}"
    if noise:
        return "obscure", f"{len(noise)} line(s) of library noise, e.g. {noise[0][:120]!r}"
    return "clear", "exit 0, no library noise"


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _planted_program(folder: Path) -> None:
    """A stand-in for a program the user keeps in the work folder: must survive."""
    _write(folder / "digits_fp16_iOS16.mlpackage" / "KEEP.txt", "the user's program")


def _state_dict_file(path: Path, edit: str) -> str:
    return f"""
        import torch
        from ane_vit.digits.model import weights_path
        state = torch.load(weights_path(), weights_only=True)
        {edit}
        torch.save(state, {str(path)!r})
    """


def _make(code: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code.replace("{d}", str(d)))], cwd=d,
                              env=_ENV, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"probe set-up failed: {done.stderr[-500:]}")
    return setup


_SEED = """
    import json, torch
    from pathlib import Path
    from ane_vit.moat import build_model
    from ane_vit.port import load_seed_state_dict, to_seed_state_dict
    from ane_vit.testing import randomize_
    _, model = build_model((1, 3, 64, 64), "tiny-moat-0", attention_mode="global")
    randomize_(model, seed=1)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seed = {k: v + 0.5 if v.is_floating_point() else v for k, v in to_seed_state_dict(model).items()}
    last = list(seed)[-1]
    first = next(k for k, v in seed.items() if v.is_floating_point())
    EDIT
    try:
        load_seed_state_dict(model, seed)
    except Exception as err:
        changed = sum(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
        print(f"REFUSED {type(err).__name__}: {str(err)[:300]}")
        print(f"CHANGED {changed} of {len(before)}")
    else:
        changed = sum(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
        bad = sum(int((~torch.isfinite(v)).sum()) for v in model.state_dict().values() if v.is_floating_point())
        print(f"LOADED {changed} of {len(before)} changed, {bad} non-finite values")
"""


def _seed_probe(name: str, edit: str, what: str, words: tuple[str, ...]) -> Probe:
    def classify(run: Run) -> tuple[str, str]:
        if run.rc != 0:
            return "obscure", run.last_line()
        changed = re.search(r"CHANGED (\d+) of (\d+)", run.out)
        if "LOADED" in run.out:
            return "silent", run.out.strip().splitlines()[-1]
        if changed and int(changed.group(1)) > 0:
            return "data-loss", f"raised after {changed.group(1)} of {changed.group(2)} tensors were overwritten"
        first = run.out.strip().splitlines()[0]
        missing = [w for w in words if w.lower() not in first.lower()]
        return ("obscure" if missing else "clear"), first[:200] + (f" [does not name {missing}]" if missing else "")

    return Probe(name, "port", what, _nothing, _py(_SEED.replace("EDIT", edit)), classify, timeout=300)


def _names_fit(run: Run) -> tuple[str, str]:
    if run.rc != 0:
        return _refused(run, "size")
    names = [Path(x.strip()).name for x in run.out.splitlines() if x.strip().endswith(".mlpackage")]
    if not names:
        return "silent", "exit 0, no file listed"
    longest = max(len(n.encode()) for n in names)
    # the atomic save stages into ".{name}.XXXXXXXX.tmp": 14 bytes more than the name, NAME_MAX 255
    if longest + 14 > 255:
        return "silent", f"dry run passes but lists a {longest}-byte file name (the save fails with 'File name too long')"
    return "clear", f"exit 0, longest file name {longest} bytes"


def _sizes(n: int, batch: int = 1) -> list[str]:
    out = []
    for h in range(1, 40):
        for w in range(1, 40):
            out += ["--size", str(32 * h), str(32 * w)]
            if len(out) // 3 == n:
                return out
    raise AssertionError(n)


_EXPORT = ["ane_vit.export", "--arch", "micro-moat", "--attention-mode", "global", "--num-classes", "10"]


def _enumerated(n: int, *extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["-m", *_EXPORT, "--pe-type", "LePE_FUSED", "--enumerated-sizes", *_sizes(n),
                      "--output-dir", str(d / "out"), *extra]


def _batch_names(run: Run) -> tuple[str, str]:
    if run.rc != 0:
        return _refused(run, "batch")
    names = [Path(x.strip()).name for x in run.out.splitlines() if x.strip().endswith(".mlpackage")]
    if len(names) == 1 and re.search(r"batch1\b|batch1_", names[0]) and "2x3x" not in names[0] and "batch1-2" not in names[0]:
        return "silent", f"one program for batch 1 and 2 named {names[0]!r}"
    return "clear", f"named {names}"


def _kept(run: Run, marker: Path, *words: str) -> tuple[str, str]:
    if not marker.exists():
        return "data-loss", f"{marker.parent.name} was replaced (exit {run.rc})"
    return _refused(run, *words)


def _evaluate_result(run: Run, check: Callable[[dict], str | None]) -> tuple[str, str]:
    out = run.folder / "digits.json"
    if run.rc != 0:
        return "unknown", ""
    if not out.exists():
        return "silent", "exit 0 and no results file"
    problem = check(json.loads(out.read_text()))
    return ("silent", problem) if problem else ("clear", "exit 0, results truthful")


def _nan_check(results: dict) -> str | None:
    acc = results["stages"][0]["accuracy"]
    return f"exit 0: NaN weights reported as {acc:.0%} accuracy" if acc <= 0.2 else None


def _limit_check(results: dict) -> str | None:
    split = results["split"]
    if split["subset"] and split["n_test"] == 360:
        return "the whole split (360 images) recorded as a subset"
    return None


def _either(run: Run, check: Callable[[dict], str | None], *words: str) -> tuple[str, str]:
    verdict = _evaluate_result(run, check)
    return verdict if verdict[0] != "unknown" else _refused(run, *words)


def _readme_commands(repo: Path) -> list[str]:
    """The ``python -m ane_vit...`` lines of the README's command section that need no input of the reader's."""
    text = (repo / "README.md").read_text()
    section = text.split("## Command lines", 1)[1].split("\n## ", 1)[0]
    lines = [x.split("#", 1)[0].strip() for x in section.splitlines()]
    return [x for x in lines if x.startswith("python -m ane_vit.") and ".mlpackage" not in x]  # no input of the reader's


# --------------------------------------------------------------------------- the probes


def probes(repo: Path) -> list[Probe]:
    out: list[Probe] = []
    add = out.append
    # ---- data loss
    add(Probe("digits-workdir-existing", "digits", "evaluate --work-dir DIR with a program already in DIR, no --overwrite",
              _planted_program, _m("ane_vit.digits", "evaluate", "--work-dir", "{d}", "--limit", "10", "--no-compressed",
                                   "--output", "{d}/digits.json"),
              lambda r: _kept(r, r.folder / "digits_fp16_iOS16.mlpackage" / "KEEP.txt", "already", "digits_fp16_iOS16.mlpackage",
                              "--overwrite")))
    add(_seed_probe("seed-meta-last", "seed[last] = torch.empty(seed[last].shape, device='meta')",
                    "load_seed_state_dict with a meta tensor as the last key", ("meta",)))
    # ---- silent: the seed loader
    add(_seed_probe("seed-nan", "seed[first] = seed[first].clone(); seed[first].view(-1)[0] = float('nan')",
                    "load_seed_state_dict with one NaN", ("nan",)))
    add(_seed_probe("seed-inf", "seed[first] = seed[first].clone(); seed[first].view(-1)[0] = float('inf')",
                    "load_seed_state_dict with one inf", ("inf",)))
    add(_seed_probe("seed-int", "seed[first] = seed[first].round().to(torch.int64)",
                    "load_seed_state_dict with an int tensor for a float weight", ("int64",)))
    add(_seed_probe("seed-bool", "seed[first] = seed[first] > 0", "load_seed_state_dict with a bool tensor", ("bool",)))
    add(_seed_probe("seed-complex", "seed[first] = seed[first].to(torch.complex64)",
                    "load_seed_state_dict with a complex tensor", ("complex",)))
    # ---- silent: digits
    add(Probe("digits-nan-weights", "digits", "evaluate --weights with one NaN weight",
              _make(_state_dict_file(Path("{d}/nan.pt"), "k = next(iter(state)); state[k] = state[k].clone(); state[k].view(-1)[0] = float('nan')")),
              _m("ane_vit.digits", "evaluate", "--weights", "{d}/nan.pt", "--limit", "10", "--no-compressed",
                 "--output", "{d}/digits.json", "--work-dir", "{d}/w"),
              lambda r: _either(r, _nan_check, "nan.pt", "NaN")))
    add(Probe("digits-train-batch-100000", "digits", "train(batch_size=100000) (training data cut to 64 images for the probe)",
              _nothing, _py("""
                  import json, ane_vit.digits.train as t
                  full = t.load_data
                  def small():
                      x, y, xt, yt = full()
                      return x[:64], y[:64], xt[:20], yt[:20]
                  t.load_data = small
                  try:
                      state, record = t.train(epochs=1, batch_size=100000, progress=False)
                  except ValueError as err:
                      print("REFUSED", err)
                  else:
                      print("RECORD", json.dumps({"batch_size": record["batch_size"], "n_train": record["n_train"]}))
              """), lambda r: _train_batch(r)))
    add(Probe("digits-limit-100000", "digits", "evaluate --limit 100000 (more than the 360 test images)",
              _nothing, _m("ane_vit.digits", "evaluate", "--limit", "100000", "--no-compressed",
                           "--output", "{d}/digits.json", "--work-dir", "{d}/w"),
              lambda r: _either(r, _limit_check, "--limit", "360"), timeout=1800))
    # ---- silent: export's dry run and file names
    add(Probe("export-dry-200-sizes", "export", "--dry-run with 200 enumerated sizes (Core ML allows 128)",
              _nothing, _enumerated(200, "--dry-run"), lambda r: _refused(r, "128")))
    add(Probe("export-dry-30-sizes", "export", "--dry-run with 30 enumerated sizes: the file name must fit",
              _nothing, _enumerated(30, "--dry-run"), _names_fit))
    add(Probe("export-dry-128-sizes", "export", "--dry-run with 128 enumerated sizes: the file name must fit",
              _nothing, _enumerated(128, "--dry-run"), _names_fit))
    add(Probe("export-30-sizes", "export", "a real export of micro-moat with 30 enumerated sizes",
              _nothing, _enumerated(30), lambda r: _saved(r, "out"), timeout=1800))
    add(Probe("export-batch-1-and-2", "export", "--shape 1 3 64 64 --shape 2 3 64 64 --enumerated-sizes: the file name",
              _nothing, lambda d: ["-m", *_EXPORT, "--pe-type", "LePE_FUSED", "--enumerated-sizes", "--shape", "1", "3", "64", "64",
                                   "--shape", "2", "3", "64", "64", "--output-dir", str(d / "out"), "--dry-run"], _batch_names))
    # ---- obscure: folders that are files, corrupted weights, a 70-pixel size
    add(Probe("export-output-dir-file", "export", "--output-dir pointing at a file",
              lambda d: _write(d / "afile", "x"), lambda d: ["-m", *_EXPORT, "--size", "64", "64", "--output-dir", str(d / "afile")],
              lambda r: _refused(r, "afile")))
    add(Probe("digits-train-output-dir-file", "digits", "train --output-dir pointing at a file (1 epoch)",
              lambda d: _write(d / "afile", "x"), _m("ane_vit.digits", "train", "--epochs", "1", "--output-dir", "{d}/afile"),
              lambda r: _refused(r, "--output-dir", "afile")))
    add(Probe("digits-workdir-file", "digits", "evaluate --work-dir pointing at a file",
              lambda d: _write(d / "afile", "x"), _m("ane_vit.digits", "evaluate", "--work-dir", "{d}/afile", "--limit", "10",
                                                   "--no-compressed", "--output", "{d}/digits.json"),
              lambda r: _refused(r, "--work-dir", "afile")))
    add(Probe("digits-output-is-folder", "digits", "evaluate --output pointing at a folder",
              lambda d: (d / "adir").mkdir(), _m("ane_vit.digits", "evaluate", "--output", "{d}/adir", "--limit", "10", "--no-compressed"),
              lambda r: _refused(r, "--output", "adir")))
    corrupt = {
        "truncated": "import torch; from ane_vit.digits.model import weights_path; b = weights_path().read_bytes(); open('{d}/w.pt', 'wb').write(b[: len(b) // 2])",
        "random-bytes": "import os; open('{d}/w.pt', 'wb').write(os.urandom(4096))",
        "empty-dict": "import torch; torch.save({}, '{d}/w.pt')",
        "a-tensor": "import torch; torch.save(torch.zeros(3), '{d}/w.pt')",
        "a-folder": "import os; os.mkdir('{d}/w.pt')",
        "wrong-shapes": "import torch; from ane_vit.digits.model import weights_path; s = torch.load(weights_path(), weights_only=True); k = next(iter(s)); s[k] = torch.zeros(2, 2); torch.save(s, '{d}/w.pt')",
    }
    for kind, code in corrupt.items():
        add(Probe(f"digits-weights-{kind}", "digits", f"evaluate --weights: {kind.replace('-', ' ')}",
                  _make(code), _m("ane_vit.digits", "evaluate", "--weights", "{d}/w.pt", "--limit", "10", "--no-compressed",
                                  "--output", "{d}/digits.json", "--work-dir", "{d}/w"),
                  lambda r: _refused(r, "w.pt")))
    add(Probe("export-api-70px", "export", "export_moat with enumerated sizes 64x64 and 70x70 (not a multiple of 32)",
              _nothing, _py("""
                  import sys
                  from ane_vit.export import export_moat
                  try:
                      export_moat("micro-moat", (1, 3, 64, 64), pe_type="LePE_FUSED", num_classes=10, output_dir=sys.argv[1] if len(sys.argv) > 1 else "out",
                                  enumerated_shapes=[(1, 3, 64, 64), (1, 3, 70, 70)])
                  except Exception as err:
                      print("REFUSED", type(err).__name__, str(err)[:400])
                  else:
                      print("SAVED")
              """), lambda r: _api_70(r)))
    # ---- command lines as the README documents them
    add(Probe("export-deployment-target", "export", "export an iOS18 program from the command line (for --int4-block)",
              _nothing, lambda d: ["-m", *_EXPORT, "--size", "64", "64", "--deployment-target", "iOS18", "--dry-run",
                                   "--output-dir", str(d / "out")], lambda r: ("clear", r.out.strip()[:120]) if r.rc == 0 else ("obscure", "no such option: " + r.last_line())))
    add(Probe("export-deployment-target-bad", "export", "--deployment-target iOS99",
              _nothing, lambda d: ["-m", *_EXPORT, "--size", "64", "64", "--deployment-target", "iOS99", "--dry-run",
                                   "--output-dir", str(d / "out")], lambda r: _refused(r, "--deployment-target", "iOS99", "iOS16")))
    for line in _readme_commands(repo):
        words = shlex.split(line)
        name = "readme-" + "-".join(w.split(".")[-1] for w in words[2:4] if not w.startswith("-"))
        name += "".join(f"-{w.lstrip('-')}" for w in words[3:] if w.startswith("--"))[:40]
        add(Probe(name, "readme", f"README as written, fresh copy: {line}", _copy_repo(repo), _readme_argv(line),
                  _readme_verdict, timeout=60))
    # ---- noise on real runs
    add(Probe("noise-export", "noise", "a real export: no coremltools/scikit-learn/torchao noise",
              _nothing, lambda d: ["-m", *_EXPORT, "--size", "64", "64", "--pe-type", "LePE_FUSED", "--output-dir", str(d / "out")], _quiet))
    add(Probe("noise-digits-evaluate", "noise", "a real digits evaluation on 10 images: no library noise",
              _nothing, _m("ane_vit.digits", "evaluate", "--limit", "10", "--no-compressed", "--output", "{d}/digits.json",
                           "--work-dir", "{d}/w"), _quiet))
    add(Probe("noise-analysis", "noise", "analysis of a small program: no library noise",
              _make("import torch; from ane_vit.export import export_model; export_model(torch.nn.Conv2d(3, 8, 3), torch.rand(1, 3, 8, 8), '{d}/c.mlpackage')"),
              _m("ane_vit.analysis", "{d}/c.mlpackage", "--top", "1"), _quiet))
    # a 64x64 1x1 conv: 4,096 weights, more than the 2,048 coremltools compresses at least
    # (a program of smaller weights is refused, rightly, since robust-compress)
    add(Probe("noise-compress", "noise", "compress --int8 of a small program: no library noise",
              _make("import torch; from ane_vit.export import export_model; export_model(torch.nn.Conv2d(64, 64, 1), torch.rand(1, 64, 8, 8), '{d}/c.mlpackage')"),
              _m("ane_vit.compress", "{d}/c.mlpackage", "--int8", "-o", "{d}/o.mlpackage"), _quiet))
    return out


def _train_batch(run: Run) -> tuple[str, str]:
    if "REFUSED" in run.out:
        return "clear", run.out.strip().splitlines()[-1][:200]
    m = re.search(r"RECORD (.*)", run.out)
    if not m:
        return "obscure", run.last_line()
    rec = json.loads(m.group(1))
    if rec["batch_size"] > rec["n_train"]:
        return "silent", f"recorded batch_size {rec['batch_size']} for {rec['n_train']} training images"
    return "clear", f"recorded batch_size {rec['batch_size']}"


def _api_70(run: Run) -> tuple[str, str]:
    if "SAVED" in run.out:
        return "silent", "saved a program that cannot take 70x70"
    line = next((x for x in run.out.splitlines() if x.startswith("REFUSED")), run.last_line())
    if "70" in line and "32" in line and "bakes a constant" not in line:
        return "clear", line[:200]
    return "obscure", line[:200]


def _saved(run: Run, sub: str) -> tuple[str, str]:
    files = list((run.folder / sub).glob("*.mlpackage")) if (run.folder / sub).exists() else []
    if run.rc == 0 and files:
        return "clear", f"saved {files[0].name} ({len(files[0].name)} bytes)"
    if run.rc == 0:
        return "silent", "exit 0, nothing saved"
    return "obscure", run.last_line()


def _copy_repo(repo: Path) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        archive = subprocess.run(["git", "-C", str(repo), "archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
    return setup


def _readme_argv(line: str) -> Callable[[Path], list[str]]:
    return lambda d: shlex.split(line)[1:]


def _readme_verdict(run: Run) -> tuple[str, str]:
    if run.rc is None:
        return "clear", "past every check and working at the time-out (killed)"
    if run.rc == 0:
        return "clear", "exit 0"
    return "obscure", "fails as written: " + run.last_line()


# --------------------------------------------------------------------------- running

_ENV: dict = {}


def run_probe(probe: Probe, repo: Path) -> tuple[str, str, float]:
    with tempfile.TemporaryDirectory(prefix=f"probe-{probe.name}-") as tmp:
        d = Path(tmp)
        probe.setup(d)
        code_repo = d if probe.area == "readme" else repo
        env = dict(_ENV, PYTHONPATH=str(code_repo), **probe.env)
        start = time.perf_counter()
        cwd = d
        proc = subprocess.Popen([sys.executable, *probe.argv(d)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=probe.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            rc = None
        run = Run(rc, out, err, d, time.perf_counter() - start)
        verdict, note = probe.classify(run)
        return verdict, note, run.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="probes to run (default: all)")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="checkout whose code is probed")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    _ENV.update(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    _ENV.pop("TQDM_DISABLE", None)
    chosen = [p for p in probes(repo) if not args.names or p.name in args.names]
    if args.list:
        for p in chosen:
            print(f"{p.name:32s} {p.area:7s} {p.what}")
        return 0
    results = []
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"probing {repo} at {commit} with {sys.executable}", flush=True)
    for p in chosen:
        verdict, note, seconds = run_probe(p, repo)
        results.append({"probe": p.name, "area": p.area, "what": p.what, "class": verdict, "note": note, "seconds": round(seconds, 1)})
        print(f"{verdict:9s} {p.name:32s} {seconds:6.1f} s  {note}", flush=True)
    counts = {c: sum(r["class"] == c for r in results) for c in CLASSES}
    print("counts: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"repo": str(repo), "commit": commit, "date": time.strftime("%Y-%m-%d"),
                                               "counts": counts, "probes": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
