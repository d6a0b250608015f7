"""``results/rules_findings.json`` and ``ane_vit.analysis.rules_survey``: the committed survey
is complete and matches the checker as it is today; the loader refuses broken files; the
table and the writer do what they say."""

import json
import shutil

import pytest

from ane_vit.analysis import RULES
from ane_vit.analysis.rules_survey import (
    ORIGINAL_COMMIT,
    load_rules_findings,
    original_rows,
    rules_findings_path,
    rules_table,
    rules_totals_table,
    survey_models,
    write_rules_survey,
)
from ane_vit.bench.original import load_original


@pytest.fixture(scope="module")
def data():
    return load_rules_findings()


def test_committed_survey_covers_every_model_and_the_original(data):
    names = [r["name"] for r in data["results"]]
    assert [m.name for m in survey_models()] == names[: len(survey_models())]
    original = [r for r in data["results"] if r["group"] == "original"]
    recorded = load_original()["results"]
    assert [(r["arch"], r["attention_mode"], r["pe_type"]) for r in original] == \
        [(r["arch"], r["attention_mode"], r["pe_type"]) for r in recorded]
    prov = data["provenance"]
    assert prov["original"]["commit"] == ORIGINAL_COMMIT and "86b363d" in prov["rules_source"]
    assert set(data["rules"]) == set(RULES)


def test_the_query_scale_is_no_longer_a_literal_in_our_models(data):
    for row in data["results"]:
        if row["group"] == "ours" and row["by_rule"]["float_literal"]["findings"]:
            assert all(m.endswith(("attn_norm", "norm", "norm1", "norm2")) for m in row["modules"]["float_literal"]), row["name"]


def test_rules_table(data):
    names = ["reference tiny-moat-0 256 global SINGLE_HEAD_RPE", "ours tiny-moat-0 256 global SINGLE_HEAD_RPE"]
    text = rules_table(data, names, ["reference", "ours"])
    lines = text.splitlines()
    assert lines[0] == "| rule | severity | reference | ours |" and len(lines) == 2 + len(RULES) + 1
    total = sum(v["findings"] for v in data["results"][0]["by_rule"].values())
    assert lines[-1].endswith(f"**{total:,}** |") and data["results"][0]["findings_total"] == total
    mb = rules_table(data, names[:1], value="bytes", scale=1e6, fmt="{:.2f}")
    layout = data["results"][1]["by_rule"]["layout_moves_last_axis"]["bytes"] / 1e6
    assert f"| `layout_moves_last_axis` | warning | {layout:.2f} |" in mb
    with pytest.raises(KeyError, match="no row 'nope'; the rows are"):
        rules_table(data, ["nope"])


def test_loader_refuses_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rules survey at"):
        load_rules_findings(tmp_path / "none.json")
    good = json.loads(rules_findings_path().read_text())
    cases = {
        "provenance has no field 'original'": lambda d: d["provenance"].pop("original"),
        r"results\[0\] \(ours tiny-moat-0 256 global SINGLE_HEAD_RPE\) lacks the rules \['dynamic_shape'\]": lambda d: d["results"][0]["by_rule"].pop("dynamic_shape"),
        r"results\[1\] .* has group 'mine'; expected one of": lambda d: d["results"][1].update(group="mine"),
    }
    for message, breaks in cases.items():
        broken = json.loads(json.dumps(good))
        breaks(broken)
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            load_rules_findings(path)


def test_writer_keeps_the_recorded_original(tmp_path):
    path = tmp_path / "rules.json"
    with pytest.raises(ValueError, match="does not exist: pass original_checkout"):
        write_rules_survey(path, models=[])
    shutil.copy(rules_findings_path(), path)
    write_rules_survey(path, overwrite=True, models=[], converters=False)
    before, after = load_rules_findings(rules_findings_path()), load_rules_findings(path)
    assert after["results"] == [r for r in before["results"] if r["group"] == "original"]
    assert after["provenance"]["original"] == before["provenance"]["original"] and after["converters"] == before["converters"]


def test_original_needs_a_checkout_of_its_commit(tmp_path):
    with pytest.raises(ValueError, match=f"expected a git checkout of .* at {ORIGINAL_COMMIT} in .*, got no git checkout"):
        original_rows(tmp_path)


def test_rules_totals_table(data):
    lines = rules_totals_table(data).splitlines()
    assert lines[0] == "| configuration | reference | original | ours |"
    rows = {r["name"]: r["findings_total"] for r in data["results"]}
    seed = next(line for line in lines if line.startswith("| tiny-moat-0 256 global SINGLE_HEAD_RPE |"))
    assert seed == (f"| tiny-moat-0 256 global SINGLE_HEAD_RPE | {rows['reference tiny-moat-0 256 global SINGLE_HEAD_RPE']:,} | "
                    f"{rows['original tiny-moat-0 256 global SINGLE_HEAD_RPE']:,} | {rows['ours tiny-moat-0 256 global SINGLE_HEAD_RPE']:,} |")
    deit = next(line for line in lines if line.startswith("| deit-tiny 224 |"))
    assert deit.split(" | ")[2] == ""  # no original DeiT
    layout = rules_totals_table(data, ["layout_moves_last_axis"])
    assert f"| {data['results'][0]['by_rule']['layout_moves_last_axis']['findings']:,} |" in layout.splitlines()[2]
    with pytest.raises(KeyError, match="unknown rule 'nope'"):
        rules_totals_table(data, ["nope"])
