"""The original repository's recorded programs as a third column: loading and checking the
file, matching it to benchmark rows, the three-column table and chart, and the benchmark's
weights. Small fixtures, no conversion (each test takes well under a second, except the
one that builds two tiny-moat-0 models at 64 x 64)."""

import copy
import json
import math
import re

import matplotlib
import pytest
import torch

from ane_vit import bench
from ane_vit.analysis import LAYOUT_OPS
from ane_vit.bench.original import _matches
from ane_vit.bench.run import _outputs, _widths
from ane_vit.moat import moat_config
from ane_vit.testing import psnr

matplotlib.use("Agg")

WIDTHS = {"stem_size": [32, 32], "hidden_size": [32, 64, 128, 256], "window_size": [None, None, [16, 16], [8, 8]]}
CONFIG = {"arch": "tiny-moat-0", "input_shape": [1, 3, 256, 256], "attention_mode": "global", "pe_type": "LePE_ADD", **WIDTHS}


def _metrics(kind="program_fact", **values):
    return {name: {"value": value, "unit": "x", "kind": kind} for name, value in values.items()}


def _values(ops, layout, act, layout_bytes, weights, params, moving=None):
    """Bench metrics; the lower bounds are set to 80 % of the upper ones, the width-moving
    layout ops to ``moving`` (default: half of the layout ops) writing half the layout bytes."""
    moving = layout // 2 if moving is None else moving
    return dict(op_count=ops, layout_op_count=layout, activation_bytes_padded=act, layout_bytes_padded=layout_bytes,
                weight_bytes=weights, parameters=params, findings_total=0, activation_bytes_padded_lower=act * 0.8,
                layout_bytes_padded_lower=layout_bytes * 0.8, layout_ops_moving_width=moving,
                layout_bytes_moving_width_padded=layout_bytes / 2, layout_bytes_moving_width_padded_lower=layout_bytes * 0.4)


ORIGINAL = {
    "provenance": {
        "repository": "https://github.com/apple/ml-vision-transformers-ane",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "citation": "apple2023mlvitane",
        "date_utc": "2026-01-01T00:00:00+00:00",
        "versions": {"python": "3.11", "torch": "2.13", "coremltools": "9.0", "numpy": "2.2", "ane_vit": "0.1.0"},
        "conversion": {"compute_precision": "float16", "minimum_deployment_target": "iOS16"},
        "weights": "randomize_(seed=0), mapped by key",
    },
    "results": [
        {"name": "original_a", "implementation": "original", **CONFIG, "channel_buffer_align": False,
         "metrics": _metrics(**_values(584, 153, 84_000_000, 5_000_000, 6_100_000, 3_076_632))},
    ],
}


def _bench_row(pair, impl, values, **config):
    return {"name": f"{pair}_{impl}", "pair": pair, "implementation": impl, **{**CONFIG, **config}, "metrics": _metrics(**values)}


RESULTS = {
    "provenance": {},
    "results": [
        _bench_row("a", "reference", _values(319, 99, 80_000_000, 8_000_000, 6_000_000, 3_076_632)),
        _bench_row("a", "ane", _values(442, 81, 75_900_000, 4_000_000, 6_100_000, 3_076_632)),
        # same configuration but other widths: the recorded program must not match it
        _bench_row("b", "reference", _values(1, 1, 1, 1, 1, 1), hidden_size=[32, 64, 128, 320], channel_buffer_align=False),
        _bench_row("b", "ane", _values(2, 2, 2, 2, 2, 2), hidden_size=[32, 64, 128, 320], channel_buffer_align=False),
    ],
}


@pytest.fixture
def original_file(tmp_path):
    path = tmp_path / "original.json"
    path.write_text(json.dumps(ORIGINAL))
    return path


def _table_cells(table: str) -> dict[tuple[str, str], list[str]]:
    """{(configuration, metric): [reference, original, ours]} from the markdown table."""
    cells, label = {}, None
    for line in table.splitlines()[2:]:
        parts = [p.strip() for p in line.strip("|").split("|")]
        label = parts[0] or label
        cells[label, parts[1]] = parts[2:]
    return cells


def test_fixture_loads(original_file):
    data = bench.load_original(original_file)
    assert data["provenance"]["commit"] == ORIGINAL["provenance"]["commit"]
    assert [r["name"] for r in data["results"]] == ["original_a"]


@pytest.mark.parametrize(
    "breaks, message",
    [
        (lambda d: d["provenance"].pop("commit"), "provenance has no field 'commit'"),
        (lambda d: d["provenance"].pop("weights"), "provenance has no field 'weights'"),
        (lambda d: d["provenance"]["versions"].pop("coremltools"), "provenance.versions has no field 'coremltools'"),
        (lambda d: d["provenance"].update(commit="main"), "40-hex-digit git commit, got 'main'"),
        (lambda d: d["results"][0].pop("hidden_size"), "results[0] has no field 'hidden_size'"),
        (lambda d: d["results"][0]["metrics"]["op_count"].pop("kind"), "metric 'op_count' has no field 'kind'"),
        (lambda d: d["results"][0]["metrics"]["op_count"].update(kind="measured_cpu"), "has kind 'measured_cpu'"),
        (lambda d: d["results"][0]["metrics"]["op_count"].update(kind="guessed"), "has kind 'guessed'"),
        (lambda d: d["results"][0]["metrics"].pop("activation_bytes_padded_lower"),
         "lacks the metrics ['activation_bytes_padded_lower']"),  # a file from before the lower bounds
        (lambda d: d.pop("provenance"), "the file has no field 'provenance'"),
    ],
)
def test_broken_file_names_path_and_field(tmp_path, breaks, message):
    data = copy.deepcopy(ORIGINAL)
    breaks(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        bench.load_original(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        bench.load_original(tmp_path / "nowhere.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        bench.load_original(bad)


def test_table_puts_each_number_in_its_column(original_file):
    table = bench.original_comparison_table(RESULTS, original_file)
    assert table.splitlines()[0] == "| configuration | metric | reference | original (0123456) | ours |"
    cells = _table_cells(table)
    label = "tiny-moat-0 256x256 global LePE_ADD"
    assert cells[label, "ops"] == ["319", "584", "442"]
    assert cells[label, "layout ops"] == ["99", "153", "81"]
    assert cells[label, "layout ops moving the width"] == ["49", "76", "40"]
    # bytes padded to 64-byte rows, lower bound (only the outputs padded) - upper bound (all)
    assert cells[label, "padded activation MB"] == ["64.0-80.0", "67.2-84.0", "60.7-75.9"]
    assert cells[label, "layout MB"] == ["6.40-8.00", "4.00-5.00", "3.20-4.00"]
    assert cells[label, "width-moving layout MB"] == ["3.20-4.00", "2.00-2.50", "1.60-2.00"]
    assert cells[label, "parameters"] == ["3,076,632"] * 3
    assert len(cells) == 8  # pair "b" (other widths) has no recorded original and is left out


def test_unmatched_pairs_show_a_dash(original_file):
    joined = bench.join_original(RESULTS, original_file)
    assert [(e["pair"], e["original"] is not None) for e in joined] == [("a", True), ("b", False)]
    cells = _table_cells(bench.original_comparison_table(RESULTS, original_file, only_matched=False))
    assert cells["tiny-moat-0 256x256 global LePE_ADD", "ops"] == ["319", "584", "442"]
    assert cells["tiny-moat-0 256x256 global LePE_ADD (unaligned)", "ops"] == ["1", "-", "2"]


def test_rows_without_widths_match_nothing(original_file):
    old = copy.deepcopy(RESULTS)
    for row in old["results"]:
        for key in WIDTHS:
            row.pop(key)
    assert all(e["original"] is None for e in bench.join_original(old, original_file))


def test_chart_draws_the_original_as_a_hatched_third_bar(original_file):
    import matplotlib.pyplot as plt

    ax = bench.plot_metric(RESULTS, "op_count", original=original_file)
    heights = {c.get_label(): [b.get_width() for b in c] for c in ax.containers}  # horizontal bars
    plt.close(ax.figure)
    assert list(heights) == ["reference", "original (recorded, 0123456)", "ours (ANE layout)"]
    assert heights["reference"] == [319, 1] and heights["ours (ANE layout)"] == [442, 2]
    first, second = heights["original (recorded, 0123456)"]
    assert first == 584 and math.isnan(second)  # pair b: nothing recorded
    assert all(b.get_hatch() == "xx" for b in ax.containers[1])
    # ours / the other, one line each: 442 / 319 and 2 / 1 (geometric mean), 442 / 584 (one model)
    assert ax.get_title(loc="left") == "Ops in the program\nours/reference 1.66*\nours/original 0.76"
    two = bench.plot_metric(RESULTS, "op_count")
    assert len(two.containers) == 2
    plt.close(two.figure)


def test_the_committed_file_loads_and_is_consistent():
    data = bench.load_original()
    prov = data["provenance"]
    assert prov["repository"] == "https://github.com/apple/ml-vision-transformers-ane"
    assert prov["conversion"]["compute_precision"] == "float16" and prov["conversion"]["minimum_deployment_target"] == "iOS16"
    assert {(r["arch"], r["attention_mode"], r["pe_type"]) for r in data["results"]} == {
        ("tiny-moat-0", "global", "LePE_ADD"), ("tiny-moat-0", "global", "SINGLE_HEAD_RPE"),
        ("tiny-moat-0", "local", "SINGLE_HEAD_RPE"), ("tiny-moat-1", "global", "LePE_ADD"),
    }
    for row in data["results"]:
        m = {k: v["value"] for k, v in row["metrics"].items()}
        assert m["op_count"] == sum(m["op_histogram"].values()), row["name"]
        assert m["layout_op_count"] == sum(n for op, n in m["op_histogram"].items() if op in LAYOUT_OPS), row["name"]
        assert m["activation_bytes_padded"] >= m["activation_bytes_dense"] > 0
        assert m["weight_mapping_psnr_db"] > 120, row["name"]  # the weights really are ours
        assert all(v["kind"] == "program_fact" for k, v in row["metrics"].items() if k != "weight_mapping_psnr_db")


def test_specs_rebuild_the_recorded_configurations_and_match_them():
    data = bench.load_original()
    specs = bench.original_specs(data)
    assert len(specs) == 2 * len(data["results"])
    for spec, row in zip(specs[1::2], data["results"]):
        config = moat_config(
            shape=(1, 3, spec.image_size, spec.image_size), base_arch=spec.arch, attention_mode=spec.attention_mode,
            pe_type=spec.pe_type, channel_buffer_align=spec.channel_buffer_align,
        )
        bench_row = {"arch": spec.arch, "input_shape": [1, 3, spec.image_size, spec.image_size],
                     "attention_mode": spec.attention_mode, "pe_type": spec.pe_type, **_widths(config)}
        assert _matches(bench_row, row), (spec.name, row["name"])
    unaligned = [s.name for s in specs if not s.channel_buffer_align]
    assert unaligned == ["tiny-moat-1_256_global_LePE_ADD_unaligned_reference", "tiny-moat-1_256_global_LePE_ADD_unaligned_ane"]
    assert [s.pair for s in bench.original_specs(data, archs=["tiny-moat-1"])] == ["tiny-moat-1_256_global_LePE_ADD_unaligned"] * 2


def test_bench_models_get_random_weights_unless_asked():
    def layer_norm_weights(spec):
        model, _, _ = spec.build()
        return torch.cat([m.weight.flatten() for m in model.modules() if "LayerNorm" in type(m).__name__])

    kw = dict(family="moat", arch="tiny-moat-0", image_size=64, pe_type="LePE_ADD")
    ref = bench.BenchSpec("t_reference", implementation="reference", **kw)
    ane = bench.BenchSpec("t_ane", implementation="ane", **kw)
    assert not torch.all(layer_norm_weights(ref) == 1) and not torch.all(layer_norm_weights(ane) == 1)
    assert torch.all(layer_norm_weights(bench.BenchSpec("f_reference", implementation="reference", weights="fresh", **kw)) == 1)
    (r, x, _), (a, _, _) = ref.build(), ane.build()
    with torch.no_grad():
        assert min(psnr(p, q) for p, q in zip(_outputs(r(x)), _outputs(a(x)))) > 100  # same random weights, ported
    with pytest.raises(ValueError, match=re.escape("weights must be one of ('random', 'fresh'), got 'trained'")):
        bench.BenchSpec("x_ane", implementation="ane", weights="trained", **kw)


def test_cli_lists_the_recorded_configurations(capsys, tmp_path):
    assert bench.main(["--with-original", "--list"]) == 0
    assert capsys.readouterr().out.split() == [s.name for s in bench.original_specs()]
    with pytest.raises(SystemExit) as info:
        bench.main(["--with-original", str(tmp_path / "missing.json"), "--list"])
    assert info.value.code == 2 and "missing.json" in capsys.readouterr().err
