"""The side-by-side benchmark: schema, provenance, kinds and files of a run on a tiny model.

Timing values are never asserted (they depend on the machine and its load); only that they
are there, labelled ``measured_cpu``, and ordered (median <= p90).
"""

import json
import math
import shlex
from datetime import datetime

import pytest
import torch
from torch import nn

from ane_vit import bench
from ane_vit.attention import PEType, WindowAttention
from ane_vit.interpret import load_program
from ane_vit.port import port_attention_weights
from ane_vit.reference import ReferenceWindowAttention
from ane_vit.testing import psnr

DIM, GRID, IMAGE = 32, 4, 16  # a 4x4 stride-4 patch conv: (1, 3, 16, 16) -> (1, 32, 4, 4)


class _TinyReference(nn.Module):
    """Patch conv, then reference attention on tokens (B, N, C); returns NCHW."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, kernel_size=4, stride=4)
        self.attn = ReferenceWindowAttention(DIM, (GRID, GRID), num_heads=2, pe_type=PEType.SINGLE_HEAD_RPE)

    def forward(self, x):
        f = self.patch(x)  # (B, C, H, W)
        t = f.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)
        return self.attn(t).transpose(1, 2).reshape(f.shape)  # (B, HW, C) -> (B, C, H, W)


class _TinyANE(nn.Module):
    """The same function in the ANE layout (B, C, 1, S); returns NCHW."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, kernel_size=4, stride=4)
        self.attn = WindowAttention(DIM, (GRID, GRID), num_heads=2, pe_type=PEType.SINGLE_HEAD_RPE)

    def forward(self, x):
        f = self.patch(x)  # (B, C, H, W)
        out = self.attn.forward_bc1s(f.reshape(f.shape[0], DIM, 1, GRID * GRID))  # (B, C, 1, HW)
        return out.reshape(f.shape)  # (B, C, 1, HW) -> (B, C, H, W)


def _tiny_builder(spec):
    torch.manual_seed(spec.seed)
    reference = _TinyReference().eval()
    example = torch.rand(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(spec.seed))
    if spec.implementation == "reference":
        return reference, example, None
    ane = _TinyANE().eval()
    ane.patch.load_state_dict(reference.patch.state_dict())
    port_attention_weights(reference.attn, ane.attn)
    return ane, example, None


def _tiny_specs():
    return [
        bench.BenchSpec(f"tiny_{IMAGE}_{impl}", "custom", impl, "tiny", IMAGE, builder=_tiny_builder)
        for impl in ("reference", "ane")
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One benchmark run of the tiny pair (two small conversions), shared by the tests."""
    keep = tmp_path_factory.mktemp("models")
    lines = []
    threads_before = torch.get_num_threads()
    results = bench.run_benchmark(_tiny_specs(), runs=3, warmup=1, threads=1, keep_models=keep, progress=lines.append, command="test")
    return results, keep, lines, threads_before


def test_provenance_fields(run):
    results, _, _, threads_before = run
    prov = results["provenance"]
    assert prov["tool"] == "ane_vit.bench" and prov["command"] == "test"
    assert datetime.fromisoformat(prov["date_utc"]).utcoffset().total_seconds() == 0
    machine = prov["machine"]
    assert set(machine) >= {"system", "platform", "machine", "cpu_model", "logical_cores", "torch_threads"}
    assert machine["torch_threads"] == 1 and machine["cpu_model"]
    assert set(prov["versions"]) == {"python", "torch", "coremltools", "numpy", "ane_vit"}
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["settings"] == {"runs": 3, "warmup": 1, "threads": 1, "parity": True, "compute_precision": "float16"}
    assert prov["kinds"] == bench.KINDS
    assert torch.get_num_threads() == threads_before  # restored after the run


def test_rows_metrics_and_kinds(run):
    results, keep, lines, _ = run
    rows = results["results"]
    assert [r["name"] for r in rows] == ["tiny_16_reference", "tiny_16_ane"]
    assert len(lines) == 3 and lines[0].startswith("[1/2] tiny_16_reference: export ")
    assert lines[2].startswith("PyTorch CPU latency, tiny_16: reference ") and lines[2].endswith("(median of 3, interleaved)")
    expected_kinds = {
        "parameters": "program_fact",
        "export_time_s": "measured_cpu",
        "mlpackage_bytes": "program_fact",
        "op_count": "program_fact",
        "layout_op_count": "program_fact",
        "layout_bytes": "program_fact",
        "activation_bytes_padded": "program_fact",
        "weight_bytes": "program_fact",
        "findings_total": "program_fact",
        "findings_by_rule": "program_fact",
        "parity_psnr_db": "derived",
        "parity_max_abs_error": "derived",
        "cpu_latency_median_ms": "measured_cpu",
        "cpu_latency_p90_ms": "measured_cpu",
    }
    for row in rows:
        assert row["errors"] == {}, row["errors"]
        assert row["input_shape"] == [1, 3, IMAGE, IMAGE] and row["pair"] == "tiny_16"
        metrics = row["metrics"]
        for name, kind in expected_kinds.items():
            assert metrics[name]["kind"] == kind, name
        assert all(m["kind"] in bench.KINDS for m in metrics.values())
        assert not any("neural" in name or "ane_latency" in name for name in metrics)
        assert metrics["cpu_latency_median_ms"]["value"] <= metrics["cpu_latency_p90_ms"]["value"]
        other = "tiny_16_ane" if row["implementation"] == "reference" else "tiny_16_reference"
        assert row["latency_settings"] == {"runs": 3, "warmup": 1, "threads": 1, "interleaved_with": [other]}
        assert metrics["parity_psnr_db"]["value"] >= 60
        assert metrics["findings_total"]["value"] == sum(metrics["findings_by_rule"]["value"].values())
        # the package is on disk with the recorded size, and the op count is the program's
        package = keep / f"{row['name']}.mlpackage"
        assert metrics["mlpackage_bytes"]["value"] == sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
        ops = [op for op in load_program(package).functions["main"].operations if op.op_type != "const"]
        assert metrics["op_count"]["value"] == len(ops)
    ref, ane = rows
    assert ref["metrics"]["parameters"]["value"] == ane["metrics"]["parameters"]["value"]
    assert ane["split_head"] is True and ref["split_head"] is None


def test_comparisons_are_derived(run):
    results, *_ = run
    (comp,) = results["comparisons"]
    assert comp["pair"] == "tiny_16" and comp["ane"] == "tiny_16_ane"
    assert all(m["kind"] == "derived" for m in comp["metrics"].values())
    rows = {r["implementation"]: r["metrics"] for r in results["results"]}
    ratio = comp["metrics"]["op_count_ane_over_reference"]["value"]
    assert ratio == pytest.approx(rows["ane"]["op_count"]["value"] / rows["reference"]["op_count"]["value"])
    assert comp["metrics"]["pytorch_ane_vs_reference_psnr_db"]["value"] > 100  # ported: same function


def test_files_table_and_chart(run, tmp_path):
    results, *_ = run
    path = bench.save_results(results, tmp_path / "bench.json")
    loaded = bench.load_results(path)
    assert loaded["results"][1]["metrics"]["op_count"] == results["results"][1]["metrics"]["op_count"]
    assert json.loads(path.read_text())["provenance"]["machine"]["torch_threads"] == 1
    program, run_table = (t.splitlines() for t in bench.comparison_table(path).split("\n\n"))
    assert bench.comparison_table(path) == bench.comparison_table(path, "program") + "\n\n" + bench.comparison_table(path, "run")
    assert len(program) == len(run_table) == 2 + len(results["results"])
    assert program[0] == "| model | impl. | ops | layout ops (width) | width MB | activation MB | rank | findings |"
    assert run_table[0].startswith("| model | impl. | weights MB |") and run_table[0].endswith("| CPU ms median (p90) |")
    rows = {row["implementation"]: row["metrics"] for row in loaded["results"]}
    m = {k: v["value"] for k, v in rows["ane"].items()}
    cells = [c.strip() for c in program[3].strip("|").split("|")]
    assert cells[:4] == ["tiny 16", "ane", str(m["op_count"]), f"{m['layout_op_count']} ({m['layout_ops_moving_width']})"]
    assert cells[4] == f"{m['layout_bytes_moving_width_padded_lower'] / 1e6:.2f}-{m['layout_bytes_moving_width_padded'] / 1e6:.2f}"
    assert cells[5] == f"{m['activation_bytes_padded_lower'] / 1e6:.1f}-{m['activation_bytes_padded'] / 1e6:.1f}"
    median, p90 = rows["reference"]["cpu_latency_median_ms"]["value"], rows["reference"]["cpu_latency_p90_ms"]["value"]
    assert run_table[2].startswith("| tiny 16 | reference | ") and run_table[2].endswith(f"| {median:.1f} ({p90:.1f}) |")
    with pytest.raises(ValueError, match=r"table must be one of \['program', 'run', 'both'\], got 'all'"):
        bench.comparison_table(path, "all")
    png = tmp_path / "bench.png"
    fig = bench.plot_bench(path, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.get_size_inches()[0] == pytest.approx(6.9)  # the book's column, not scaled down
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert any(t.startswith("Ops in the program\nANE") for t in titles), titles
    assert all(t.get_fontsize() >= 11 for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels())
    ax = bench.plot_metric(results, "activation_bytes_padded")
    assert ax.get_xlabel() == "MB written"
    bars = [b.get_width() for c in ax.containers for b in c]
    assert bars == pytest.approx([r["metrics"]["activation_bytes_padded"]["value"] / 1e6 for r in results["results"]])
    ticks = [line.get_xdata()[0] for line in ax.lines]  # the lower bounds, one tick per bar
    assert ticks == pytest.approx([r["metrics"]["activation_bytes_padded_lower"]["value"] / 1e6 for r in results["results"]])


def test_merge_timings_keeps_them_only_for_unchanged_programs(run):
    import copy

    results, *_ = run
    facts = copy.deepcopy(results)
    for row in facts["results"]:
        row["metrics"] = {k: v for k, v in row["metrics"].items() if v["kind"] != "measured_cpu"}
        row.pop("latency_settings")
    facts["provenance"] = {**facts["provenance"], "date_utc": "2027-01-01T00:00:00+00:00", "settings": {"timing": False}}
    facts["results"][1]["metrics"]["op_count"]["value"] += 1  # the ANE program changed since it was timed
    merged = bench.merge_timings(facts, results)
    ref, ane = merged["results"]
    assert ref["metrics"]["cpu_latency_median_ms"] == results["results"][0]["metrics"]["cpu_latency_median_ms"]
    assert ref["latency_settings"] == results["results"][0]["latency_settings"]
    assert "cpu_latency_median_ms" not in ane["metrics"] and "export_time_s" not in ane["metrics"]
    assert merged["provenance"]["timings_dropped"] == ["tiny_16_ane"]
    assert merged["provenance"]["date_utc"] == results["provenance"]["date_utc"]  # the timings' date
    assert merged["provenance"]["program_facts"]["date_utc"] == "2027-01-01T00:00:00+00:00"
    assert "cpu_latency_median_ms_ane_over_reference" not in merged["comparisons"][0]["metrics"]
    same = bench.merge_timings(copy.deepcopy(facts) | {"results": copy.deepcopy(facts["results"][:1])}, results)
    assert same["provenance"]["timings_dropped"] == []
    import matplotlib.pyplot as plt

    fig = bench.plot_bench(facts)  # no timing: all layout bytes take the latency panel's place
    assert [ax.get_title(loc="left").split("\n")[0] for ax in fig.axes] == [
        "Ops in the program", "Width-moving layout", "Activation bytes", "Layout-op bytes"]
    plt.close(fig)
    with pytest.raises(ValueError, match="facts must come from a run without timing"):
        bench.merge_timings(results, results)
    with pytest.raises(ValueError, match="timed holds no measured_cpu metric"):
        bench.merge_timings(facts, facts)


def test_save_results_writes_infinity_as_string(tmp_path):
    results = {"provenance": {}, "results": [{"name": "a", "metrics": {"p": {"value": math.inf, "unit": "dB", "kind": "derived"}}}]}
    loaded = bench.load_results(bench.save_results(results, tmp_path / "r.json"))
    assert loaded["results"][0]["metrics"]["p"]["value"] == "inf"


def test_load_results_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": []}))
    with pytest.raises(ValueError, match=r"missing \['provenance'\]"):
        bench.load_results(bad)
    bad.write_text(json.dumps({"provenance": {}, "results": [{"name": "m", "metrics": {"x": {"value": 1, "kind": "ane_latency"}}}]}))
    with pytest.raises(ValueError, match="has kind 'ane_latency'; expected one of"):
        bench.load_results(bad)


def test_argument_errors():
    with pytest.raises(ValueError, match="specs is empty"):
        bench.run_benchmark([])
    spec = _tiny_specs()[0]
    with pytest.raises(ValueError, match="spec names must be unique"):
        bench.run_benchmark([spec, spec])
    with pytest.raises(ValueError, match="threads must be a positive int, got 0"):
        bench.run_benchmark([spec], threads=0)
    with pytest.raises(ValueError, match="implementation must be one of .* got 'fast'"):
        bench.BenchSpec("x", "moat", "fast", "tiny-moat-0", 256)
    with pytest.raises(ValueError, match="family must be 'moat' or 'deit'.* got 'swin'"):
        bench.BenchSpec("x", "swin", "ane", "swin-t", 224)
    with pytest.raises(ValueError, match="metric must be one of"):
        bench.plot_metric({"provenance": {}, "results": []}, "ane_latency")


def test_cpu_latency_structure():
    stats = bench.cpu_latency(nn.Identity(), torch.zeros(2), runs=5, warmup=0)
    assert set(stats) == {"median_ms", "p90_ms", "runs", "warmup", "threads"}
    assert stats["runs"] == 5 and 0 <= stats["median_ms"] <= stats["p90_ms"]
    with pytest.raises(ValueError, match="need runs >= 1"):
        bench.cpu_latency(nn.Identity(), torch.zeros(2), runs=0)
    calls = []
    a = nn.Identity()
    a.register_forward_hook(lambda *_: calls.append("a"))
    b = nn.Identity()
    b.register_forward_hook(lambda *_: calls.append("b"))
    both = bench.cpu_latency_interleaved([(a, torch.zeros(1)), (b, torch.zeros(1))], runs=3, warmup=1)
    assert len(both) == 2 and all(s["runs"] == 3 for s in both)
    assert "".join(calls) == "ab" + "ab" * 3  # warm-up each, then timed in turn


def test_default_specs_cover_the_issue():
    specs = bench.default_specs()
    pairs = {}
    for s in specs:
        pairs.setdefault(s.pair, set()).add(s.implementation)
    assert pairs == {
        p: {"reference", "ane"}
        for p in ["tiny-moat-0_256_global", "tiny-moat-0_256_local", "tiny-moat-1_256_global", "tiny-moat-1_256_local", "deit-tiny_224"]
    }
    assert {s.pe_type for s in bench.default_specs("LePE_ADD") if s.family == "moat"} == {"LePE_ADD"}


@pytest.mark.parametrize("pair", ["tiny-moat-0_256_local", "deit-tiny_224"])
def test_builtin_pairs_compute_the_same_function(pair):
    """The ANE model of a pair carries the reference's weights (no conversion here)."""
    ref_spec, ane_spec = (s for s in bench.default_specs() if s.pair == pair)
    outs = []
    for spec in (ref_spec, ane_spec):
        module, example, config = spec.build()
        assert config is not None and not module.training
        with torch.no_grad():
            outs.append(bench._outputs(module(example)))
    assert len(outs[0]) == len(outs[1])
    assert min(psnr(r, a) for r, a in zip(*outs)) > 80


def test_cli_list_and_errors(capsys, tmp_path):
    assert bench.main(["--list"]) == 0
    assert "deit-tiny_224_ane" in capsys.readouterr().out.split()
    with pytest.raises(SystemExit) as exc:
        bench.main(["--models", "tiny-moat-9*"])
    assert exc.value.code == 2
    assert "unknown model(s) ['tiny-moat-9*']; choose from: tiny-moat-0_256_global_reference" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--pe-type", "ROPE"])
    assert "--pe-type must be one of" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert bench.main(["--output-dir", str(blocker / "sub"), "--models", "deit-tiny_224_ane"]) == 2
    assert "cannot write to --output-dir" in capsys.readouterr().err


def test_cli_writes_json_and_chart(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench.cli, "default_specs", lambda pe_type="SINGLE_HEAD_RPE": _tiny_specs())
    argv = ["--quick", "--models", "tiny_16_*", "--no-parity", "--output-dir", str(tmp_path), "--name", "b"]
    assert bench.main(argv) == 0
    data = bench.load_results(tmp_path / "b.json")
    assert data["provenance"]["command"] == shlex.join(["python", "-m", "ane_vit.bench", *argv])
    assert data["provenance"]["settings"]["runs"] == 3 and data["provenance"]["wall_time_s"] > 0
    assert "parity_psnr_db" not in data["results"][0]["metrics"]
    assert (tmp_path / "b.png").stat().st_size > 0
    captured = capsys.readouterr()
    assert captured.out.startswith("| model | impl. |") and "[2/2] tiny_16_ane" in captured.err
    # program facts again, without timing anything, joined to the timings of the first run
    argv2 = ["--models", "tiny_16_*", "--no-parity", "--output-dir", str(tmp_path), "--name", "b2",
             "--keep-timings-from", str(tmp_path / "b.json")]
    assert bench.main(argv2) == 0
    merged = bench.load_results(tmp_path / "b2.json")
    assert merged["provenance"]["program_facts"]["settings"]["timing"] is False
    assert merged["provenance"]["timings_dropped"] == [] and merged["provenance"]["date_utc"] == data["provenance"]["date_utc"]
    for old, new in zip(data["results"], merged["results"]):
        assert new["metrics"]["cpu_latency_median_ms"] == old["metrics"]["cpu_latency_median_ms"]
        assert new["metrics"]["op_count"] == old["metrics"]["op_count"]
    with pytest.raises(SystemExit):
        bench.main([*argv2[:-1], str(tmp_path / "missing.json")])
    assert "--keep-timings-from: " in capsys.readouterr().err


@pytest.mark.parametrize("family, arch, pe_type", [("moat", "tiny-moat-0", "LePE_ADD"), ("deit", "deit-tiny", "NONE")])
def test_benchmark_models_have_non_trivial_weights(family, arch, pe_type):
    """A fresh model's identity norms and zero biases or abs_pe tables are dropped by the
    converter, so its op counts would understate a trained model's: both builds are randomised."""
    for impl in ("reference", "ane"):
        spec = bench.BenchSpec(f"{arch}_{impl}", family, impl, arch, 128 if family == "moat" else 224, "global", pe_type)
        module, _, _ = spec.build()
        trivial = [name for name, p in module.named_parameters()
                   if (name.endswith("bias") or "abs_pe" in name) and not p.detach().any()
                   or "norm" in name and name.endswith("weight") and torch.equal(p.detach(), torch.ones_like(p))]
        assert not trivial, f"{spec.name}: fresh parameters {trivial[:5]}"
def test_cli_does_not_overwrite_results_without_overwrite(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench.cli, "default_specs", lambda pe_type="SINGLE_HEAD_RPE": _tiny_specs())
    ran = []
    monkeypatch.setattr(bench.cli, "run_benchmark", lambda *a, **k: ran.append(1) or pytest.fail("measured"))
    committed = tmp_path / "b.json"
    committed.write_text("{}")
    argv = ["--quick", "--models", "tiny_16_*", "--no-parity", "--output-dir", str(tmp_path), "--name", "b"]
    assert bench.main(argv) == 2
    assert f"{committed} already exist(s); pass --overwrite to replace" in capsys.readouterr().err
    assert committed.read_text() == "{}" and not ran and not (tmp_path / "b.png").exists()
    monkeypatch.undo()
    monkeypatch.setattr(bench.cli, "default_specs", lambda pe_type="SINGLE_HEAD_RPE": _tiny_specs())
    assert bench.main([*argv, "--overwrite"]) == 0
    assert bench.load_results(committed)["results"]

