"""ane_vit.coreai: export to .aimodel, Apple's runtime behind a plain function, the program summary,
three runtimes, accuracy through Core AI, and the errors a user meets on the way.

Apple's runtime is the oracle for our programs (parity with PyTorch float32); Apple's own
``AIModelAsset.summary`` is the oracle for our IR reader. Where Core AI is not installed the
tests that need it skip with ``coreai_status``'s reason; the others check what a user sees
there.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ane_vit.coreai as cai
from ane_vit.coreai import stack
from ane_vit.testing import assert_parity, randomize_

ROOT = Path(__file__).resolve().parents[1]
OK, WHY = cai.coreai_status()
needs_coreai = pytest.mark.skipif(not OK, reason=WHY)


class Toy(nn.Module):
    """Small, with ops the summary must find: a 1x1 conv, a rank-5 value, a transpose that moves
    the last axis, a softmax over channels.

    Shapes: ``x: (1, 3, 4, 8) -> (1, 8, 4, 4)``.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        y = self.conv(x)  # (1, 8, 4, 8)
        y = y.reshape(1, 2, 4, 4, 8)  # (1, 2, 4, 4, 8): rank 5
        y = y.sum(dim=1)  # (1, 4, 4, 8)
        y = y.permute(0, 3, 2, 1)  # (1, 8, 4, 4): the last axis moves
        return torch.softmax(y, dim=1)


def _toy() -> tuple[nn.Module, torch.Tensor]:
    return randomize_(Toy(), seed=0).eval(), torch.rand(1, 3, 4, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def toy_programs(tmp_path_factory):
    """The toy as float32 and float16 .aimodel files (one export each per test module)."""
    if not OK:
        pytest.skip(WHY)
    model, x = _toy()
    folder = tmp_path_factory.mktemp("toy")
    paths = {p: cai.export_model(model, x, folder / f"toy_{p}.aimodel", precision=p, output_names=["probs"],
                                 metadata={"note": "test"}) for p in cai.PRECISIONS}
    return model, x, paths


# --------------------------------------------------------------------------- without Core AI


def test_import_and_clear_errors_without_core_ai(monkeypatch, tmp_path):
    """Where the stack cannot be imported, ane_vit.coreai still imports and every entry point says
    why and where Core AI installs (checked by making the import fail)."""
    monkeypatch.setitem(sys.modules, "coreai", None)  # "import coreai" now raises ImportError
    monkeypatch.setitem(sys.modules, "coreai.runtime", None)
    stack._import_error.cache_clear()
    try:
        ok, message = cai.coreai_status()
        assert not ok
        assert message.startswith("Apple's Core AI stack (coreai-core==1.0.0b3, coreai-torch==0.4.3, coreai-opt==0.4.0) "
                                  "is not usable here: import coreai.runtime failed (ModuleNotFoundError")
        with pytest.raises(cai.CoreAIUnavailableError) as err:
            cai.export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), tmp_path / "m.aimodel")
        assert str(err.value).startswith("export_model needs Core AI. Apple's Core AI stack")
        assert isinstance(err.value, ImportError)
        assert not (tmp_path / "m.aimodel").exists()
        if not stack._platform_has_wheels():
            assert cai.WHERE_COREAI_INSTALLS in str(err.value)
        else:
            assert "pip install -r requirements.txt" in str(err.value)
    finally:
        stack._import_error.cache_clear()


def test_no_module_imports_the_stack_at_import_time():
    """import ane_vit.coreai must work where Core AI is missing: the stack is imported inside functions."""
    import ast

    stack_modules = ("coreai", "coreai_torch", "coreai_opt")
    for path in sorted((ROOT / "ane_vit" / "coreai").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are not executed
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            bad = [n for n in names if n.split(".")[0] in stack_modules]
            assert not bad, f"{path.name} imports {bad} at module level"


def test_pins_are_the_requirements():
    req = (ROOT / "requirements.txt").read_text()
    for name, version in cai.COREAI_PINS.items():
        line = next(line for line in req.splitlines() if line.startswith(f"{name}=="))
        assert line.startswith(f"{name}=={version}; python_version >= \"3.11\"")
        assert 'platform_machine == "x86_64"' in line and 'platform_machine == "arm64"' in line


# --------------------------------------------------------------------------- paths


def test_check_aimodel_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        cai.check_aimodel(tmp_path / "none.aimodel")
    assert str(err.value) == (f"no Core AI program at {str(tmp_path / 'none.aimodel')!r} (expected an .aimodel folder, "
                              "e.g. written by python -m ane_vit.coreai export)")
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    with pytest.raises(ValueError, match=r"is a Core ML ML Program \(\.mlpackage\); Apple's Core AI runtime cannot open one"):
        cai.check_aimodel(package)
    other = tmp_path / "m.onnx"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"got .*m\.onnx' \(suffix '\.onnx'\)"):
        cai.check_aimodel(other)
    as_file = tmp_path / "f.aimodel"
    as_file.write_text("x")
    with pytest.raises(ValueError, match="is a file; a Core AI program is an .aimodel folder"):
        cai.check_aimodel(as_file)
    empty = tmp_path / "e.aimodel"
    empty.mkdir()
    (empty / "metadata.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds no Core AI program \(main\.mlirb is missing\); it has \['metadata.json'\]"):
        cai.check_aimodel(empty)


def test_resolve_target_checks_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"is a Core ML ML Program \(\.mlpackage\)"):
        cai.resolve_aimodel_target(tmp_path / "m.mlpackage")
    existing = tmp_path / "m.aimodel"
    existing.mkdir()
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True / --overwrite"):
        cai.resolve_aimodel_target(existing)
    assert cai.resolve_aimodel_target(existing, overwrite=True) == existing
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write to the output folder"):
        cai.resolve_aimodel_target(blocker / "sub" / "m.aimodel")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cai.resolve_aimodel_target("~/new.aimodel") == tmp_path / "new.aimodel"


def test_default_filename_adds_precision_to_the_seeds_name():
    cfg = {"base_arch": "tiny-moat-0", "attention_mode": "global", "pe_type": "SINGLE_HEAD_RPE", "split_head": True}
    assert cai.default_aimodel_filename(cfg, (1, 3, 256, 256), "float16") == (
        "tiny-moat-0_globalAttn_batch1_256x256_PEType.SINGLE_HEAD_RPE_split-head_True_float16.aimodel")


def test_argument_errors_come_before_conversion(tmp_path):
    with pytest.raises(ValueError, match=r"precision must be one of \['float32', 'float16'\], got 'int8'"):
        cai.export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), tmp_path / "m.aimodel", precision="int8")
    with pytest.raises(TypeError, match="example_input must be float32"):
        cai.to_exported_program(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"output_names must be 1 distinct non-empty strings \(the model returns 1 tensor"):
        cai.output_names_for(torch.zeros(1), ["a", "b"])
    assert cai.output_names_for((torch.zeros(1), torch.zeros(1))) == ["output_0", "output_1"]


# --------------------------------------------------------------------------- export and run


@needs_coreai
def test_float32_program_matches_pytorch(toy_programs):
    model, x, paths = toy_programs
    with torch.no_grad():
        ref = model(x)
    out = cai.run_aimodel(paths["float32"], {"x": x})
    assert list(out) == ["probs"] and out["probs"].dtype == np.float32
    report = assert_parity(ref, out["probs"], atol=1e-6, min_psnr=110)
    assert report.max_abs < 1e-6


@needs_coreai
def test_float16_program_takes_and_returns_float16(toy_programs):
    model, x, paths = toy_programs
    with torch.no_grad():
        ref = model(x)
    with cai.AIModelRunner(paths["float16"]) as run:
        assert run.input_shapes == {"x": (1, 3, 4, 8)} and run.input_dtypes == {"x": np.dtype("float16")}
        out = run(x.numpy())["probs"]  # float32 data, cast to the declared float16
    assert out.dtype == np.float16
    report = assert_parity(ref, out.astype(np.float32), min_psnr=50)
    assert report.max_abs > 0  # float16 rounding is visible: the program did not stay float32


@needs_coreai
def test_the_model_is_unchanged_by_a_float16_export(toy_programs, tmp_path):
    model, x, _ = toy_programs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cai.to_exported_program(model, x, precision="float16")
    assert all(v.dtype == torch.float32 and torch.equal(v, before[k]) for k, v in model.state_dict().items())


@needs_coreai
def test_runner_input_errors(toy_programs):
    _, x, paths = toy_programs
    with cai.AIModelRunner(paths["float32"]) as run:
        with pytest.raises(ValueError) as err:
            run({"x": torch.rand(1, 3, 8, 4)})
        assert str(err.value) == "input 'x' of toy_float32.aimodel (main) expects shape (1, 3, 4, 8) float32, got (1, 3, 8, 4) float32"
        with pytest.raises(ValueError, match=r"takes the inputs \['x'\]; got \['y'\] \(unknown: \['y'\]\) \(missing: \['x'\]\)"):
            run({"y": x})
        with pytest.raises(TypeError, match="input 'x' of toy_float32.aimodel \\(main\\) expects float32, got int64"):
            run({"x": np.zeros((1, 3, 4, 8), np.int64)})
        a = run(x)["probs"]
        b = run(np.asfortranarray(x.numpy()))["probs"]  # strides ignored by the runtime: made contiguous first
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="the runner is not open"):
        run(x)
    with pytest.raises(ValueError, match=r"has no function 'other'; it has \['main'\]"):
        cai.AIModelRunner(paths["float32"], "other").open()


@needs_coreai
def test_runs_inside_a_running_event_loop(toy_programs):
    """Jupyter runs an event loop: asyncio.run would fail there, run_aimodel must not."""
    _, x, paths = toy_programs

    async def inside():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
            asyncio.run(coro)
        coro.close()
        return cai.run_aimodel(paths["float32"], {"x": x})

    out = asyncio.run(inside())
    np.testing.assert_array_equal(out["probs"], cai.run_aimodel(paths["float32"], {"x": x})["probs"])


@needs_coreai
def test_metadata_records_provenance(toy_programs):
    _, _, paths = toy_programs
    meta = cai.read_aimodel_metadata(paths["float16"])
    custom = meta["creatorDefinedMetadata"]
    assert meta["author"] == "ane_vit" and meta["producer"] == "coreai-core 1.0.0b3"
    assert meta["description"].startswith("Toy exported by ane_vit 0.1.0: float16 Core AI program, fixed input x (1, 3, 4, 8).")
    assert custom["ane_vit.precision"] == "float16" and custom["ane_vit.input_shape"] == [1, 3, 4, 8]
    assert custom["ane_vit.output_shapes"] == {"probs": [1, 8, 4, 4]} and custom["note"] == "test"
    assert custom["ane_vit.coreai_core_version"] == "1.0.0b3" and custom["ane_vit.torch_version"] == torch.__version__
    assert custom["ane_vit.route"].endswith("cast_to_16_bit_precision + coreai_torch.TorchConverter")


@needs_coreai
def test_save_is_atomic_and_refuses_to_overwrite(toy_programs, tmp_path, monkeypatch):
    model, x, paths = toy_programs
    program = cai.to_aiprogram(model, x)
    target = cai.save_aiprogram(program, tmp_path / "m.aimodel")
    first = (target / "main.mlirb").read_bytes()
    with pytest.raises(FileExistsError):
        cai.save_aiprogram(program, target)

    def interrupted(self, path):  # writes part of the new program, then fails
        os.makedirs(path)
        open(os.path.join(path, "main.mlirb"), "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cai.save._AssetWriter, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cai.save_aiprogram(program, target, overwrite=True)
    assert (target / "main.mlirb").read_bytes() == first  # the old program, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.aimodel"]  # no staging folder left
    monkeypatch.undo()
    cai.save_aiprogram(cai.to_aiprogram(model, x, precision="float16"), target, overwrite=True)
    with cai.AIModelRunner(target) as run:
        assert run.input_dtypes == {"x": np.dtype("float16")}


# --------------------------------------------------------------------------- summary


@needs_coreai
def test_summary_finds_the_toys_ops(toy_programs):
    _, _, paths = toy_programs
    report = cai.summarize(paths["float32"])
    s = report.summary()
    assert [(t.name, t.shape, t.dtype) for t in report.inputs] == [("x", (1, 3, 4, 8), "float32")]
    assert [(t.name, t.shape, t.dtype) for t in report.outputs] == [("probs", (1, 8, 4, 4), "float32")]
    transposes = [op for op in report.ops if op.op_type == "transpose"]
    assert [op.detail for op in transposes] == [{"perm": [0, 3, 2, 1], "moves_last_axis": True}]
    assert s["softmax_axes"] == {"axis 1 of rank 4": 1}
    assert s["values_rank_5"] >= 1 and s["max_rank"] == 5
    weights = report.constants["float32"]
    assert weights == {"count": 2, "bytes": (8 * 3 + 8) * 4}  # the conv's weight (8, 3, 1, 1) and bias, float32
    assert cai.summarize(paths["float16"]).constants["float16"] == {"count": 2, "bytes": (8 * 3 + 8) * 2}
    assert s["file_bytes"] == cai.aimodel_nbytes(paths["float32"]) > weights["bytes"]


@needs_coreai
def test_summary_agrees_with_apples_summary(toy_programs):
    """Apple's AIModelAsset.summary counts the same file independently (after its own lowering)."""
    _, _, paths = toy_programs
    for precision, path in paths.items():
        report = cai.summarize(path)
        apple = dict(report.operation_distribution)
        ours = report.histogram(inlined=True)
        for op in ("conv2d", "transpose", "softmax"):
            assert ours[op] == apple[op], (precision, op)
        storage = dict(report.storage_types)
        assert ("Float16" in storage) == (precision == "float16") == ("float16" in report.constants)
        assert report.constants[precision]["count"] >= 2  # the conv's weight and bias at least
    assert cai.summarize(paths["float16"]).summary()["value_dtypes"].get("float16", 0) > 0


@needs_coreai
def test_summary_in_memory_and_json(toy_programs):
    model, x, paths = toy_programs
    report = cai.summarize(cai.to_aiprogram(model, x))
    assert report.file_bytes is None and report.storage_types is None
    assert report.histogram() == cai.summarize(paths["float32"]).histogram()
    data = json.loads(cai.summarize(paths["float32"]).to_json())
    assert data["summary"]["transposes_moving_last_axis"] == 1 and data["inputs"][0]["shape"] == [1, 3, 4, 8]
    with pytest.raises(ValueError, match=r"the program has no function 'other'; it has \["):
        cai.summarize(paths["float32"], entry="other")
    with pytest.raises(TypeError, match="expected an .aimodel path or a coreai.authoring.AIProgram, got Toy"):
        cai.summarize(model)


# --------------------------------------------------------------------------- three runtimes, accuracy


@needs_coreai
def test_three_runtimes_on_the_toy():
    model, x = _toy()
    result = cai.three_runtimes(model, x, facts=False)
    rows = {r["precision"]: r for r in result["rows"]}
    assert result["outputs"] == ["output"] and set(rows) == {"float32", "float16"}
    with torch.no_grad():
        ref = model(x).numpy()
    assert rows["float32"]["peak"] == pytest.approx(float(np.abs(ref).max()))
    for key in ("coreml_vs_pytorch", "coreai_vs_pytorch", "coreai_vs_coreml"):
        assert rows["float32"][key]["max_abs"] < 1e-6 and rows["float32"][key]["psnr_db"] > 110
    fp16 = rows["float16"]
    yardstick = fp16["fp16_storage_vs_pytorch"]["max_abs"]
    assert 0 < yardstick < 1e-2
    for key in ("coreml_vs_pytorch", "coreai_vs_pytorch", "coreai_vs_coreml"):
        assert fp16[key]["max_abs"] <= 4 * yardstick, key  # within float16 rounding
    assert "fp16_storage_vs_pytorch" not in rows["float32"]


@needs_coreai
def test_digits_accuracy_on_a_fixed_subset():
    """The float16 Core AI program on 10 test images (1 per class), batches of 4 (the last one
    padded): labels as PyTorch's."""
    from ane_vit.digits import load_data, load_model
    from ane_vit.digits.evaluate import predict, stratified_subset

    result = cai.digits_accuracy(limit=10, precisions=("float16",), batch=4)
    _, _, x, y = load_data()
    keep = stratified_subset(y, 1)
    fp32 = predict(load_model("reference"), x[keep])
    expected_accuracy = float((fp32 == y[keep]).double().mean())
    reference, program = result["stages"]
    assert result["split"] == {"n_test": 10, "subset": True, "seed": 0, "test_fraction": 0.2, "batch": 4}
    assert reference["accuracy"] == expected_accuracy
    assert program["stage"] == "Core AI program float16, Apple's runtime"
    assert program["agreement_with_fp32"] == 1.0 and program["accuracy"] == expected_accuracy
    assert 0.4e6 < program["bytes"] < 0.8e6  # ~280 k float16 weights
    assert program["errors"] == int((fp32 != y[keep]).sum())
    assert result["provenance"]["versions"]["coreai-core"] == "1.0.0b3"
    with pytest.raises(ValueError, match="limit must be an int >= 10"):
        cai.digits_accuracy(limit=5)


@needs_coreai
def test_matmul_probe_tells_the_two_sums_apart():
    """Apple's runtime sums a float16 batch_matmul in float16, in order; our interpreter in float32."""
    probe = cai.matmul_accumulation_probe(k=32, rows=4)
    assert probe["apple_vs_fp16_sequential_max_abs"] == 0.0
    assert probe["interpreter_vs_fp32_once_max_abs"] == 0.0
    ulps = probe["ulps_vs_exact"]
    assert ulps["interpreter"]["max"] <= 0.5 < ulps["apple_runtime"]["max"]
    assert ulps["fp16_sequential"] == ulps["apple_runtime"]


# --------------------------------------------------------------------------- Mac only


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal off macOS")
def test_mac_functions_refuse_off_macos(tmp_path):
    for call, what in ((lambda: cai.compute_plan(tmp_path / "m.aimodel"), "compute_plan"),
                       (lambda: cai.specialization_options("neural_engine"), "specialization_options")):
        with pytest.raises(RuntimeError) as err:
            call()
        assert str(err.value).startswith(f"{what} needs macOS 27+ with the Core AI framework on Apple silicon; this is ")
    with pytest.raises(RuntimeError, match=r"^compile_aimodel needs a Mac with Xcode 27\+ \(xcrun coreai-build\); this is "):
        cai.compile_aimodel(tmp_path / "m.aimodel")
    with pytest.raises(ValueError, match=r"compute_unit must be one of \['cpu', 'gpu', 'neural_engine'\], got 'ane'"):
        cai.compute_plan(tmp_path / "m.aimodel", compute_unit="ane")


@needs_coreai
@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal off macOS")
def test_runner_compute_unit_needs_a_mac(toy_programs):
    with pytest.raises(RuntimeError, match=r"^specialization_options needs macOS 27\+ with the Core AI framework"):
        cai.AIModelRunner(toy_programs[2]["float32"], compute_unit="neural_engine").open()


# --------------------------------------------------------------------------- committed results


def _results(name):
    from ane_vit.notebook import results_dir

    return json.loads((results_dir() / name).read_text())


def test_committed_three_runtime_results_are_complete_and_consistent():
    data = _results("coreai_three_runtimes.json")
    prov = data["provenance"]
    assert prov["command"] == "python -m ane_vit.coreai runtimes --overwrite" and prov["date"][:2] == "20"
    assert {k: prov["versions"][k] for k in cai.COREAI_PINS} == cai.COREAI_PINS
    models = {m["model"]: m for m in data["models"]}
    assert set(models) == set(cai.STUDY_MODELS)
    for name, entry in models.items():
        if entry["kind"] != "runtimes":
            assert set(entry["programs"]) == {"float16"}
            continue
        for row in entry["rows"]:
            for key in ("coreml_vs_pytorch", "coreai_vs_pytorch", "coreai_vs_coreml"):
                pair = row[key]
                assert pair["max_abs"] >= 0 and math.isfinite(pair["psnr_db"])
                if row["precision"] == "float32":
                    assert pair["psnr_db"] > 100, (name, row["output"], key)
                else:
                    assert pair["psnr_db"] > 40, (name, row["output"], key)
            if row["precision"] == "float16":
                assert row["fp16_storage_vs_pytorch"]["psnr_db"] > 40
        assert set(entry["programs"]) == {"float32", "float16"}
        for programs in entry["programs"].values():
            assert programs["coreai"]["ops"] == sum(programs["coreai"]["histogram"].values())
            assert programs["coreml"]["ops"] == sum(programs["coreml"]["histogram"].values())


def test_committed_float16_op_results_are_complete_and_consistent():
    data = _results("coreai_float16_ops.json")
    assert data["provenance"]["command"] == "python -m ane_vit.coreai probes --overwrite"
    assert {k: data["provenance"]["versions"][k] for k in cai.COREAI_PINS} == cai.COREAI_PINS
    probes = data["matmul_accumulation_probes"]
    assert [p["k"] for p in probes] == [16, 64, 256, 1024]
    for p in probes:
        assert p["apple_vs_fp16_sequential_max_abs"] == 0.0 and p["interpreter_vs_fp32_once_max_abs"] == 0.0
        assert p["ulps_vs_exact"]["apple_runtime"] == p["ulps_vs_exact"]["fp16_sequential"]
    means = [p["ulps_vs_exact"]["apple_runtime"]["mean"] for p in probes]
    assert means == sorted(means) and means[-1] > 5 * means[0]  # the error grows with the length of the sum
    cases = {c["op"]: c for c in data["cases"]}
    assert len(cases) == 9
    for case in cases.values():
        assert case["interpreter"]["max"] < 2.0 and case["interpreter"]["max_abs_over_peak"] < 1e-3
        assert 0 < case["apple_runtime"]["mean"] and case["apple_runtime"]["max_abs_over_peak"] < 1e-2


def test_committed_accuracy_results_are_complete_and_consistent():
    data = _results("coreai_digits_accuracy.json")
    assert data["split"]["n_test"] == 360 and not data["split"]["subset"]
    assert data["provenance"]["command"] == "python -m ane_vit.coreai accuracy --overwrite"
    stages = {r["stage"]: r for r in data["stages"]}
    assert set(stages) == {"reference, PyTorch fp32", "Core AI program float32, Apple's runtime",
                           "Core AI program float16, Apple's runtime"}
    for r in stages.values():
        assert r["accuracy"] == pytest.approx(1 - r["errors"] / 360)
    assert stages["Core AI program float16, Apple's runtime"]["bytes"] < stages["Core AI program float32, Apple's runtime"]["bytes"]
