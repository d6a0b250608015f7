"""Probe the Core ML program side of issue 16 as a demanding user would (not run by CI).

Each probe is one invocation of ``python -m ane_vit.compress``, ``python -m ane_vit.analysis``
or a few lines calling ``ane_vit.interpret`` / ``ane_vit.compress`` from Python, run as a
subprocess on small programs (a 1x1 conv, 64 channels) made here with coremltools alone.
Every probe is classified as

* ``data-loss``: a program that existed before is gone or changed, or a stray folder was left;
* ``silent``: exit status 0 (or no warning) where the run should refuse, or say what it did;
* ``obscure``: it failed, but with a traceback or a message that does not name the file;
* ``clear``: it refused (or warned) in one message that names the file or the setting.

Run from the repository root, with the environment of the tests; ``--repo`` probes another
checkout (for example the main branch, to count the cases before a change):

    .venv/bin/python .ci/probe_cli.py                     # every probe, then the counts
    .venv/bin/python .ci/probe_cli.py --list              # the probes, without running them
    .venv/bin/python .ci/probe_cli.py --repo /work/main --json before.json
    .venv/bin/python .ci/probe_cli.py silent-group-3 obscure-compress-trunc

Each probe starts a fresh interpreter that imports coremltools (5-20 s each on a loaded
2-core machine): the whole run takes 10-20 minutes. ``HOME`` is a temporary folder for every
probe, so nothing outside the temporary folder is ever touched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = ("clear", "silent", "obscure", "data-loss")

# --------------------------------------------------------------------------- fixtures

_FIXTURES = r'''
import os, sys, json
import numpy as np
import torch
torch.set_num_threads(1)
import coremltools as ct
import coremltools.optimize.coreml as cto
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

out = sys.argv[1]
rng = np.random.default_rng(0)
weight = rng.standard_normal((64, 64, 1, 1)).astype(np.float32) * 0.1
bias = rng.standard_normal(64).astype(np.float32) * 0.1


def program(w, target, name):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64, 4, 4), dtype=types.fp16)], opset_version=target)
    def prog(x):
        return mb.conv(x=x, weight=w.astype(np.float16), bias=bias.astype(np.float16), name="y")

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       compute_precision=ct.precision.FLOAT16)
    model.save(os.path.join(out, name))
    return model


conv16 = program(weight, ct.target.iOS16, "conv16.mlpackage")
program(weight, ct.target.iOS18, "conv18.mlpackage")
program(weight * 2, ct.target.iOS18, "old.mlpackage")   # the program an --overwrite replaces
bad = weight.copy(); bad[0, 0, 0, 0] = np.nan
program(bad, ct.target.iOS16, "nan16.mlpackage")
bad = weight.copy(); bad[3, 5, 0, 0] = np.inf
program(bad, ct.target.iOS16, "inf16.mlpackage")
config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4, mode="kmeans"))
cto.palettize_weights(conv16, config).save(os.path.join(out, "pal16.mlpackage"))
torch.save({"weight": torch.from_numpy(weight)}, os.path.join(out, "weights.pt"))
'''


def _make_fixtures(root: Path, python: str, env: dict) -> None:
    (root / "fixtures").mkdir()
    proc = subprocess.run([python, "-c", _FIXTURES, str(root / "fixtures")], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"making the fixtures failed:\n{proc.stderr[-3000:]}")
    fx = root / "fixtures"
    (fx / "empty.mlpackage").mkdir()
    (fx / "junk.mlpackage").mkdir()
    (fx / "junk.mlpackage" / "Manifest.json").write_text("this is not a manifest\n")
    (fx / "notes.txt").write_text("a text file, not a program\n")
    for name in ("noweights", "trunc"):
        shutil.copytree(fx / "conv16.mlpackage", fx / f"{name}.mlpackage")
    (blob,) = (fx / "noweights.mlpackage").rglob("weight.bin")
    blob.unlink()
    (blob,) = (fx / "trunc.mlpackage").rglob("weight.bin")
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    (fx / "afile").write_text("a file where a folder should be\n")


def _digest(path: Path) -> str | None:
    """A hash of every file (names and bytes) under ``path``; None if it does not exist."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- probes


@dataclass
class Probe:
    id: str
    what: str
    issue_class: str  # how issue 16 classified the case on the code it probed
    argv: list[str] | None = None  # python -m <argv...>
    code: str | None = None  # or a python snippet
    names: list[str] = field(default_factory=list)  # what a clear message must name
    kind: str = "refuse"  # refuse | ctrl-c | analysis-compressed | warn | accept-json
    output: str | None = None  # a path (relative to the run folder) that must not be written
    error_type: str | None = None  # the exception a clear answer raises (API probes), e.g. "TypeError"


def _compress(*args: str) -> list[str]:
    return ["ane_vit.compress", *args]


# A Ctrl-C that arrives while the first ``import sklearn`` runs (coremltools imports it inside
# ``try: ... except:``, in coremltools/_deps/__init__.py): sent by the process itself, at that
# moment, to make the case deterministic.
_CTRL_C_DURING_SKLEARN = textwrap.dedent('''
    import importlib.abc, os, runpy, signal, sys

    class _CtrlC(importlib.abc.MetaPathFinder):
        sent = False

        def find_spec(self, name, path=None, target=None):
            if name == "sklearn" and not _CtrlC.sent:
                _CtrlC.sent = True
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, _CtrlC())
    sys.argv = [{module!r}, *{args!r}]
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
''')

# A Ctrl-C while the compressed program is copied into the output's folder (coremltools'
# save copies the package with shutil.copytree): after the first file of that copy.
_CTRL_C_DURING_SAVE = textwrap.dedent('''
    import os, runpy, shutil, signal, sys

    _copytree = shutil.copytree
    _folder = os.path.dirname(os.path.abspath({output!r}))

    def copytree(src, dst, *args, **kwargs):
        nested = len(args) >= 3 or "copy_function" in kwargs  # shutil's own recursive call
        if nested or not os.path.abspath(dst).startswith(_folder + os.sep):
            return _copytree(src, dst, *args, **kwargs)
        copied = []

        def copy(a, b, **kw):
            if copied:
                os.kill(os.getpid(), signal.SIGINT)
            copied.append(a)
            return shutil.copy2(a, b, **kw)

        kwargs["copy_function"] = copy
        return _copytree(src, dst, *args, **kwargs)

    shutil.copytree = copytree
    sys.argv = ["ane_vit.compress", *{args!r}]
    runpy.run_module("ane_vit.compress", run_name="__main__", alter_sys=True)
''')

_API = '''
import json, sys, warnings
import numpy as np
try:
{body}
except Exception as err:
    print(f"{{type(err).__name__}}: {{err}}", file=sys.stderr)
    sys.exit(1)
'''


def _api(body: str) -> str:
    return _API.format(body=textwrap.indent(textwrap.dedent(body).strip(), " " * 4))


def _probes() -> list[Probe]:
    fx = "fixtures"
    out = "out.mlpackage"
    p: list[Probe] = []
    # --- data loss
    p.append(Probe("loss-overwrite-interrupted", "compress --overwrite, Ctrl-C while the new program is copied in",
                   "data-loss", code=_CTRL_C_DURING_SAVE.format(
                       output="keep/old.mlpackage", args=[f"{fx}/conv16.mlpackage", "--int8", "-o", "keep/old.mlpackage",
                                                          "--overwrite"]),
                   kind="overwrite"))
    p.append(Probe("loss-tilde", "compress IN --int8 -o '~/mine.mlpackage' (quoted tilde), $HOME/mine.mlpackage exists",
                   "data-loss", argv=_compress(f"{fx}/conv16.mlpackage", "--int8", "-o", "~/mine.mlpackage"),
                   names=["already exists"], kind="tilde"))
    # --- silent: a compression that compresses nothing
    for g in ("3", "7", "100000"):
        p.append(Probe(f"silent-group-{g}", f"compress --palettize 4 --group-size {g} (iOS18 program)", "silent",
                       argv=_compress(f"{fx}/conv18.mlpackage", "--palettize", "4", "--group-size", g, "-o", out),
                       names=[g], output=out))
    for b in ("3", "100000"):
        p.append(Probe(f"silent-int4-block-{b}", f"compress --int4-block {b} (iOS18 program)", "silent",
                       argv=_compress(f"{fx}/conv18.mlpackage", "--int4-block", b, "-o", out), names=[b], output=out))
    p.append(Probe("silent-prune-2:100000", "compress --prune 2:100000", "silent",
                   argv=_compress(f"{fx}/conv16.mlpackage", "--prune", "2:100000", "-o", out), names=["100000"], output=out))
    for method in (["--int8"], ["--palettize", "4"]):
        p.append(Probe(f"silent-palettized{method[0].replace('--', '-')}", f"compress {' '.join(method)} on an already "
                       "palettized program", "silent", argv=_compress(f"{fx}/pal16.mlpackage", *method, "-o", out),
                       names=["pal16.mlpackage"], output=out))
    for weights, method in (("nan16", ["--int8"]), ("nan16", ["--prune", "0.5"]), ("inf16", ["--int8"]),
                            ("nan16", ["--palettize", "4"])):
        p.append(Probe(f"silent-{weights}{method[0].replace('--', '-')}", f"compress {' '.join(method)} on a program with "
                       f"a {weights[:3]} weight", "silent", argv=_compress(f"{fx}/{weights}.mlpackage", *method, "-o", out),
                       names=[f"{weights}.mlpackage"], output=out))
    p.append(Probe("silent-ctrl-c-compress", "Ctrl-C while compress imports its dependencies", "silent",
                   code=_CTRL_C_DURING_SKLEARN.format(module="ane_vit.compress",
                                                      args=[f"{fx}/conv16.mlpackage", "--int8", "-o", out]),
                   kind="ctrl-c", output=out))
    p.append(Probe("silent-ctrl-c-analysis", "Ctrl-C while analysis imports its dependencies", "silent",
                   code=_CTRL_C_DURING_SKLEARN.format(module="ane_vit.analysis", args=[f"{fx}/conv16.mlpackage"]),
                   kind="ctrl-c"))
    p.append(Probe("silent-analysis-compressed", "analysis of a palettized program: weights behind constexpr ops", "silent",
                   argv=["ane_vit.analysis", f"{fx}/pal16.mlpackage"], kind="analysis-compressed"))
    p.append(Probe("silent-interpret-nan-input", "run_program with one NaN pixel", "silent", kind="warn", names=["'x'"],
                   code=_api(f'''
                       from ane_vit.interpret import run_program
                       x = np.zeros((1, 64, 4, 4), np.float32); x[0, 0, 0, 0] = np.nan
                       out = run_program("{fx}/conv16.mlpackage", {{"x": x}})
                       print(int(np.isnan(out["y"]).sum()), "NaN outputs")
                   ''')))
    p.append(Probe("silent-interpret-overflow-input", "run_program with 1e6 in a float16 program's input", "silent",
                   kind="warn", names=["'x'"], code=_api(f'''
                       from ane_vit.interpret import run_program
                       x = np.zeros((1, 64, 4, 4), np.float32); x[0, 0, 0, 0] = 1e6
                       out = run_program("{fx}/conv16.mlpackage", {{"x": x}})
                       print(int((~np.isfinite(out["y"])).sum()), "non-finite outputs")
                   ''')))
    # --- obscure: input that is not a program, missing or truncated weights
    bad = {"empty": "empty.mlpackage", "junk": "junk.mlpackage", "text": "notes.txt", "pt": "weights.pt",
           "noweights": "noweights.mlpackage", "trunc": "trunc.mlpackage"}
    for key, name in bad.items():
        p.append(Probe(f"obscure-compress-{key}", f"compress {name} --int8", "obscure",
                       argv=_compress(f"{fx}/{name}", "--int8", "-o", out), names=[name], output=out))
        p.append(Probe(f"obscure-analysis-{key}", f"analysis {name}", "obscure",
                       argv=["ane_vit.analysis", f"{fx}/{name}"], names=[name]))
        p.append(Probe(f"obscure-interpret-{key}", f"run_program({name!r}, ...)", "obscure", names=[name], code=_api(f'''
            from ane_vit.interpret import run_program
            run_program("{fx}/{name}", {{"x": np.zeros((1, 64, 4, 4), np.float32)}})
        ''')))
    p.append(Probe("obscure-compress-unwritable", "compress -o FILE/out.mlpackage (a file where the folder should be)",
                   "obscure", argv=_compress(f"{fx}/conv16.mlpackage", "--int8", "-o", f"{fx}/afile/out.mlpackage"),
                   names=["afile"]))
    p.append(Probe("obscure-study-unwritable", "compress study -o FILE/out.json", "obscure",
                   argv=_compress("study", "-o", f"{fx}/afile/out.json"), names=["afile"]))
    for key, call in (("nbits", 'compress.palettize(P16, np.int64(4))'),
                      ("palettize", 'compress.palettize(P18, np.int64(4), group_size=np.int64(16))'),
                      ("int4", 'compress.quantize_int4_block(P18, np.int64(32))'),
                      ("prune-n-m", 'compress.prune_n_m(P16, np.int64(2), np.int64(4))'),
                      ("prune", 'compress.prune_magnitude(P16, np.float32(0.5))')):
        p.append(Probe(f"obscure-numpy-{key}", f"{call} (numpy numbers in the compress API)", "obscure",
                       kind="accept-json", code=_api(f'''
                           from ane_vit import compress
                           P16, P18 = "{fx}/conv16.mlpackage", "{fx}/conv18.mlpackage"
                           out = {call}
                           print(json.dumps(compress.compression_record(out)))
                       ''')))
    for key, value in (("str", '"pixels.png"'), ("none", "None"), ("list-of-str", '[["a"]]')):
        p.append(Probe(f"obscure-interpret-{key}-input", f"run_program(P, {{'x': {value}}})", "obscure", names=["'x'"],
                       error_type="TypeError", code=_api(f'''
                           from ane_vit.interpret import run_program
                           run_program("{fx}/conv16.mlpackage", {{"x": {value}}})
                       ''')))
    return p


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    id: str
    what: str
    issue_class: str
    verdict: str
    returncode: int | None
    seconds: float
    message: str


def _first_lines(text: str, n: int = 2) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:400]


def _classify(probe: Probe, run_dir: Path, proc: subprocess.CompletedProcess, before: dict) -> tuple[str, str]:
    err, out = proc.stderr, proc.stdout
    traceback = "Traceback (most recent call last)" in err
    written = probe.output is not None and (run_dir / probe.output).exists()
    message = _first_lines(err) or _first_lines(out)
    if probe.kind == "overwrite":
        kept = _digest(run_dir / "keep" / "old.mlpackage") == before["old"]
        leftovers = sorted(p.name for p in (run_dir / "keep").iterdir() if p.name != "old.mlpackage")
        if not kept or leftovers:
            return "data-loss", f"old program {'kept' if kept else 'LOST'}; left behind: {leftovers}; {message}"
        return ("clear" if proc.returncode != 0 else "silent"), message
    if probe.kind == "tilde":
        home_kept = _digest(run_dir / "home" / "mine.mlpackage") == before["mine"]
        stray = (run_dir / "~").exists()
        if not home_kept or stray:
            return "data-loss", f"$HOME/mine.mlpackage {'kept' if home_kept else 'REPLACED'}; folder '~' left: {stray}; {message}"
    if probe.kind == "ctrl-c":
        if proc.returncode == 0 or written:
            return "silent", f"exit {proc.returncode}, output written: {written}; {message}"
        return "clear", message
    if probe.kind == "analysis-compressed":
        text = out.lower()
        named = any(w in text for w in ("palettiz", "lut_to_dense"))
        return ("clear" if proc.returncode == 0 and named else "silent"), _first_lines(out, 40)
    if probe.kind == "warn":
        if traceback:
            return "obscure", message
        if "Warning" not in err:
            return "silent", message
        return ("clear" if all(n in err for n in probe.names) else "obscure"), message
    if probe.kind == "accept-json":
        if proc.returncode == 0:
            try:
                json.loads(out.strip().splitlines()[-1])
                return "clear", "accepted: " + _first_lines(out, 1)
            except (ValueError, IndexError):
                return "obscure", message
        return ("obscure" if traceback or "JSON" in err else "clear"), message
    # refuse: the run must fail, write nothing, in one message that names what it is about
    if written or proc.returncode == 0:
        return "silent", f"exit {proc.returncode}, output written: {written}; {message}"
    if traceback or not all(n in err for n in probe.names):
        return "obscure", message
    if probe.error_type and f"{probe.error_type}: " not in err:
        return "obscure", message
    return "clear", message


def _run(probe: Probe, root: Path, python: str, env: dict, timeout: float) -> Result:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{probe.id}.", dir=root))
    os.symlink(root / "fixtures", run_dir / "fixtures")
    (run_dir / "home").mkdir()
    before = {}
    if probe.kind == "overwrite":
        (run_dir / "keep").mkdir()
        shutil.copytree(root / "fixtures" / "old.mlpackage", run_dir / "keep" / "old.mlpackage")
        before["old"] = _digest(run_dir / "keep" / "old.mlpackage")
    if probe.kind == "tilde":
        shutil.copytree(root / "fixtures" / "old.mlpackage", run_dir / "home" / "mine.mlpackage")
        before["mine"] = _digest(run_dir / "home" / "mine.mlpackage")
    cmd = [python, "-m", *probe.argv] if probe.argv else [python, "-c", probe.code]
    env = {**env, "HOME": str(run_dir / "home")}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(probe.id, probe.what, probe.issue_class, "obscure", None, timeout, "timed out")
    seconds = time.perf_counter() - start
    verdict, message = _classify(probe, run_dir, proc, before)
    return Result(probe.id, probe.what, probe.issue_class, verdict, proc.returncode, round(seconds, 1), message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="probe ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the probes and exit")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent),
                        help="the checkout to probe (its ane_vit is put first on PYTHONPATH); default: this one")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (with coremltools and torch)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per probe (a timeout counts as obscure)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    probes = _probes()
    ids = [p.id for p in probes]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate probe ids")
    unknown = sorted(set(args.ids) - set(ids))
    if unknown:
        parser.error(f"unknown probe ids {unknown}")
    chosen = [p for p in probes if not args.ids or p.id in args.ids]
    if args.list:
        for p in chosen:
            print(f"{p.id:<36}{p.issue_class:<10}{p.what}")
        return 0

    repo = Path(args.repo).resolve()
    env = {**os.environ, "PYTHONPATH": str(repo), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONDONTWRITEBYTECODE": "1"}
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"probing {repo} (commit {commit or '?'}), {len(chosen)} probes", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="ane-vit-probes-") as tmp:
        root = Path(tmp)
        _make_fixtures(root, args.python, env)
        for probe in chosen:
            r = _run(probe, root, args.python, env, args.timeout)
            results.append(r)
            print(f"{r.id:<36}{r.verdict:<10}exit {r.returncode!s:<5}{r.seconds:6.1f} s  {r.message[:300]}", flush=True)
    counts = Counter(r.verdict for r in results)
    print("\n" + ", ".join(f"{counts.get(c, 0)} {c}" for c in CLASSES) + f"  ({len(results)} probes)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "repo": str(repo), "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": args.python, "counts": {c: counts.get(c, 0) for c in CLASSES},
            "results": [r.__dict__ for r in results],
        }, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
