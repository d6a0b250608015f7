"""ane_vit.export: conversion, saved packages (names, metadata, fp16), paths, the CLI."""

import dataclasses
import json
import os
import re
from enum import Enum
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ane_vit
from ane_vit import PEType
from ane_vit import export as ex
from ane_vit.export import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    config_to_dict,
    default_filename,
    export_moat,
    export_model,
    main,
    read_metadata,
    to_mlprogram,
)
from ane_vit.moat import MOATConfig

SEED_LOCAL = "tiny-moat-0_localAttn_batch1_256x256_PEType.LePE_ADD_split-head_True.mlpackage"  # seed tests.py


class TwoOutputs(nn.Module):
    """A tiny feature-pyramid-like module: two NCHW outputs (as a list, like MOAT)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        return [y, self.b(y)]


class Color(Enum):
    RED = 1


@dataclasses.dataclass
class Inner:
    size: tuple = (4, 4)


@dataclasses.dataclass
class ToyConfig:
    name: str = "toy"
    pe_type: PEType = PEType.SINGLE_HEAD_RPE
    widths: tuple = (8, 16)
    window: tuple = (None, (4, 4))
    inner: Inner = dataclasses.field(default_factory=Inner)
    act: nn.Module = dataclasses.field(default_factory=nn.GELU)


def _no_conversion(*args, **kwargs):
    raise AssertionError("converted although the target path should have been refused first")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "toy.mlpackage"
    model = TwoOutputs()
    saved = export_model(
        model, torch.rand(1, 3, 16, 16), path, config=ToyConfig(), output_names=["stage_0", "stage_1"],
        metadata={"version": "7.1", "license": "MIT", "note": "hello", "extra": {"k": (1, 2)}},
    )
    return saved


def test_export_model_names_shapes_and_metadata(exported):
    import coremltools as ct

    assert exported.name == "toy.mlpackage" and exported.is_dir()
    meta = read_metadata(exported)
    assert meta["inputs"] == ["x"]
    assert meta["outputs"] == ["stage_0", "stage_1"]
    assert meta["author"] == "ane_vit"
    assert meta["version"] == "7.1"  # metadata= overrides the standard fields
    assert "TwoOutputs" in meta["short_description"]
    user = meta["user_defined"]
    assert user["ane_vit.version"] == ane_vit.__version__
    assert user["ane_vit.torch_version"] == torch.__version__
    assert user["ane_vit.coremltools_version"] == ct.__version__
    assert user["ane_vit.compute_precision"] == "float16"
    assert user["ane_vit.minimum_deployment_target"] == "iOS16"
    assert json.loads(user["ane_vit.input_shape"]) == [1, 3, 16, 16]
    assert user["ane_vit.config_class"] == "ToyConfig"
    assert user["note"] == "hello" and json.loads(user["extra"]) == {"k": [1, 2]}
    assert meta["config"] == {
        "name": "toy", "pe_type": "SINGLE_HEAD_RPE", "widths": [8, 16], "window": [None, [4, 4]],
        "inner": {"size": [4, 4]}, "act": "GELU",
    }
    spec = ct.models.MLModel(str(exported), skip_model_load=True).get_spec()
    assert spec.specificationVersion == 7  # iOS16 / macOS13
    assert spec.description.metadata.license == "MIT"
    (inp,) = spec.description.input
    assert list(inp.type.multiArrayType.shape) == [1, 3, 16, 16]  # fixed shape, no ranges
    assert inp.type.multiArrayType.WhichOneof("ShapeFlexibility") is None
    float16 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16  # iOS16 target: float16 in and out, no casts
    assert [f.type.multiArrayType.dataType for f in (*spec.description.input, *spec.description.output)] == [float16] * 3
    assert [o.shortDescription for o in spec.description.output] == ["tensor (1, 8, 16, 16)", "tensor (1, 16, 8, 8)"]


def test_float16_program_and_default_output_names():
    from coremltools.converters.mil.mil import types

    single = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU())
    mlmodel = to_mlprogram(single, torch.rand(1, 3, 8, 8), output_names=["y"])
    ops = [op for op in mlmodel._mil_program.functions["main"].operations if op.op_type == "conv"]
    assert ops and all(op.outputs[0].dtype == types.fp16 for op in ops)
    assert [o.name for o in mlmodel.get_spec().description.output] == ["y"]
    with pytest.raises(ValueError, match=r"got 1 output names \['y'\] for 2 outputs"):
        to_mlprogram(TwoOutputs(), torch.rand(1, 3, 8, 8), output_names=["y"])
    with pytest.raises(ValueError, match="unique"):
        to_mlprogram(TwoOutputs(), torch.rand(1, 3, 8, 8), output_names=["x", "y"])


def test_export_model_default_output_names(tmp_path):
    saved = export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), tmp_path)
    assert saved == tmp_path / "Conv2d_batch1_8x8.mlpackage"  # a folder gets the default name
    assert read_metadata(saved)["outputs"] == ["output"]
    assert read_metadata(saved)["config"] is None


def test_image_input_normalises_inside_the_program():
    from ane_vit.interpret import run_program

    conv = nn.Conv2d(3, 4, 3, padding=1).eval()
    pixels = torch.randint(0, 256, (1, 3, 8, 8)).float()
    mlmodel = to_mlprogram(conv, pixels, ["image"], "float32", image_input=True, output_names=["y"])
    (inp,) = mlmodel.get_spec().description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    assert (inp.type.imageType.width, inp.type.imageType.height) == (8, 8)
    out = run_program(mlmodel, {"image": pixels.numpy()})["y"]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = conv((pixels / 255 - mean) / std).numpy()
    assert np.max(np.abs(out - ref)) < 1e-4
    with pytest.raises(ValueError, match=r"exactly one input of shape \(B, 3, H, W\), got shapes \[\(1, 1, 8, 8\)\]"):
        to_mlprogram(nn.Conv2d(1, 1, 1), torch.rand(1, 1, 8, 8), image_input=True)
    with pytest.raises(ValueError, match="image_std must be positive"):
        to_mlprogram(conv, pixels, image_input=True, image_std=(1.0, 0.0, 1.0))


def test_existing_file_is_not_overwritten(exported, monkeypatch):
    before = read_metadata(exported)["version"]
    monkeypatch.setattr(ex.save, "to_mlprogram", _no_conversion)
    with pytest.raises(FileExistsError) as err:
        export_model(TwoOutputs(), torch.rand(1, 3, 16, 16), exported)
    assert str(exported) in str(err.value) and "pass overwrite=True / --overwrite" in str(err.value)
    assert read_metadata(exported)["version"] == before


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "m.mlpackage"
    export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), path, metadata={"version": "1"})
    export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), path, metadata={"version": "2"}, overwrite=True)
    assert read_metadata(path)["version"] == "2"


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_interrupted_overwrite_keeps_the_old_package(tmp_path, monkeypatch):
    path = tmp_path / "m.mlpackage"
    export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), path, metadata={"version": "1"})
    before = sorted(p.relative_to(path) for p in path.rglob("*"))

    def partial_save(mlmodel, target):  # coremltools interrupted half-way through writing
        (target / "Data").mkdir(parents=True)
        (target / "Data" / "partial.bin").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ex.save, "_save_package", partial_save)
    with pytest.raises(KeyboardInterrupt):
        export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), path, metadata={"version": "2"}, overwrite=True)
    assert read_metadata(path)["version"] == "1"
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary sibling left behind


def test_failed_rename_puts_the_old_package_back(tmp_path, monkeypatch):
    path = tmp_path / "m.mlpackage"
    export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), path, metadata={"version": "1"})
    rename, calls = os.rename, []

    def second_rename_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new package into place
            raise OSError("disk went away")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError, match="disk went away"):
        export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), path, metadata={"version": "2"}, overwrite=True)
    monkeypatch.undo()
    assert read_metadata(path)["version"] == "1" and list(tmp_path.iterdir()) == [path]


def test_overwrite_replaces_a_file_and_leaves_nothing_beside(tmp_path):
    path = tmp_path / "m.mlpackage"
    path.write_text("not a package")
    export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), path, metadata={"version": "3"}, overwrite=True)
    assert path.is_dir() and read_metadata(path)["version"] == "3"
    assert list(tmp_path.iterdir()) == [path]


def test_no_output_folder_until_the_package_is_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(ex.save, "to_mlprogram", _interrupt)  # Ctrl-C during the conversion
    folder = tmp_path / "new" / "sub"
    with pytest.raises(KeyboardInterrupt):
        export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), folder / "m.mlpackage")
    assert list(tmp_path.iterdir()) == []  # was: an empty new/sub/ folder
    monkeypatch.undo()
    monkeypatch.setattr(ex.save, "_save_package", _interrupt)  # Ctrl-C while saving
    with pytest.raises(KeyboardInterrupt):
        export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), folder / "m.mlpackage")
    assert list(tmp_path.iterdir()) == []  # the folders made for the save are gone again


def test_unwritable_folder_fails_before_conversion(tmp_path, monkeypatch):
    monkeypatch.setattr(ex.save, "to_mlprogram", _no_conversion)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot write to the output folder") as err:
        export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), blocker / "sub" / "m.mlpackage")
    assert str(blocker / "sub") in str(err.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_folder_fails_before_conversion(tmp_path, monkeypatch):
    monkeypatch.setattr(ex.save, "to_mlprogram", _no_conversion)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write to the output folder"):
            export_model(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 8), folder / "m.mlpackage")
    finally:
        folder.chmod(0o700)


def test_argument_errors(tmp_path):
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        export_model(lambda t: t, x, tmp_path)
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor, got ndarray"):
        export_model(nn.Conv2d(3, 4, 1), x.numpy(), tmp_path)
    with pytest.raises(ValueError, match=r"saved as \.mlpackage"):
        export_model(nn.Conv2d(3, 4, 1), x, tmp_path / "m.mlmodel")
    with pytest.raises(ValueError, match=r"compute_precision must be one of \['float16', 'float32'\], got 'int8'"):
        to_mlprogram(nn.Conv2d(3, 4, 1), x, compute_precision="int8")
    with pytest.raises(ValueError, match="unknown minimum_deployment_target 'iOS99'"):
        to_mlprogram(nn.Conv2d(3, 4, 1), x, minimum_deployment_target="iOS99")


def test_default_filename_follows_the_seed():
    cfg = MOATConfig(base_arch="tiny-moat-0", attention_mode="local", pe_type=PEType.LePE_ADD, split_head=True)
    assert default_filename(cfg, (1, 3, 256, 256)) == SEED_LOCAL
    as_names = {"base_arch": "tiny-moat-1", "attention_mode": "global", "pe_type": "SINGLE_HEAD_RPE", "split_head": False}
    assert default_filename(as_names, (2, 3, 512, 256)) == (
        "tiny-moat-1_globalAttn_batch2_512x256_PEType.SINGLE_HEAD_RPE_split-head_False.mlpackage"
    )
    with pytest.raises(ValueError, match=r"missing \['attention_mode', 'pe_type', 'split_head'\]"):
        default_filename({"base_arch": "x"}, (1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"shape must be 4 positive ints \(B, C, H, W\), got \(3, 256, 256\)"):
        default_filename(cfg, (3, 256, 256))


def test_config_to_dict_is_json_and_matches_asdict():
    cfg = MOATConfig(pe_type=PEType.RPE)
    d = config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d
    expected = json.loads(json.dumps(dataclasses.asdict(cfg), default=lambda v: v.name))
    assert d == expected
    assert config_to_dict({"c": Color.RED, "t": (1, (2, 3))}) == {"c": "RED", "t": [1, [2, 3]]}


def test_export_moat_wiring(tmp_path, monkeypatch):
    calls = []

    def fake_export_model(model, example, path, **kwargs):
        calls.append((model, example, path, kwargs))
        return path

    monkeypatch.setattr(ex.save, "export_model", fake_export_model)
    path = export_moat("tiny-moat-0", (1, 3, 256, 256), "local", output_dir=tmp_path, num_classes=10)
    model, example, saved, kwargs = calls[0]
    assert path == saved == tmp_path / "tiny-moat-0_localAttn_batch1_256x256_PEType.SINGLE_HEAD_RPE_split-head_True.mlpackage"
    assert kwargs["output_names"] == ["logits"]
    assert kwargs["config"].num_classes == 10 and kwargs["config"].window_size[2:] == ((8, 8), (8, 8))
    assert tuple(example.shape) == (1, 3, 256, 256)
    export_moat(output_dir=tmp_path, split_head=False, pe_type="LePE_ADD", local_window_size=None)
    assert calls[1][3]["output_names"] == ["stage_0", "stage_1", "stage_2", "stage_3"]
    assert calls[1][2].name == "tiny-moat-0_globalAttn_batch1_256x256_PEType.LePE_ADD_split-head_False.mlpackage"
    with pytest.raises(ValueError, match=r"attention_mode must be one of \['global', 'local'\], got 'both'"):
        export_moat(attention_mode="both", output_dir=tmp_path)


# --------------------------------------------------------------------------- CLI


def test_cli_defaults_are_the_seeds_exports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the dry run checks ./exported_model as the real run would
    assert main(["--dry-run", "--output-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.split()
    names = [
        f"tiny-moat-0_{mode}Attn_batch1_{s}x{s}_PEType.SINGLE_HEAD_RPE_split-head_True.mlpackage"
        for mode in ("global", "local")
        for s in (512, 256)
    ]
    assert lines == [str(tmp_path / n) for n in names]
    main(["--dry-run", "--arch", "tiny-moat-1", "--shape", "2", "3", "256", "192", "--attention-mode", "local",
          "--attention-mode", "local", "--pe-type", "PEType.lepe_add", "--no-split-head"])
    assert capsys.readouterr().out.split() == [
        os.path.join("exported_model", "tiny-moat-1_localAttn_batch2_256x192_PEType.LePE_ADD_split-head_False.mlpackage")
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--pe-type", "ALIBI"], "unknown PE type 'ALIBI'; choose from LePE_ADD, LePE_FUSED, RPE, SINGLE_HEAD_RPE, NONE"),
        (["--arch", "resnet"], "invalid choice: 'resnet'"),
        (["--size", "256", "256", "--shape", "1", "3", "256", "256"], "not allowed with argument"),
        (["--shape", "1", "3", "256", "256", "--batch", "2"], "--batch goes with --size"),
    ],
)
def test_cli_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
@pytest.mark.parametrize(
    "argv, message",
    [
        # the global model was converted (about 2 minutes) before the local window was refused
        (["--size", "256", "256", "--local-window", "5", "5"],
         "tiny-moat-0, local attention, batch 1, 256x256: local window sizes must lie in 6..16, got (5, 5)"),
        (["--size", "100", "100"],
         "tiny-moat-0, global attention, batch 1, 100x100: image height and width must be positive multiples of 32, got (100, 100)"),
        (["--size", "256", "256", "--size", "224", "224", "--attention-mode", "local"],
         "tiny-moat-0, local attention, batch 1, 224x224: no default local window for a final feature map of (7, 7): "
         "none of (6, 8, 10) divides 7; pass local_window_size or another input size"),
        (["--num-classes", "0"],
         "tiny-moat-0, global attention, batch 1, 512x512: num_classes must be a positive int, or None for the four stage maps; got 0"),
    ],
)
def test_cli_checks_every_job_before_converting_anything(argv, message, dry_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ex.save, "export_moat", _no_conversion)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        main([*argv, *dry_run, "--output-dir", str(out)])
    assert err.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m ane_vit.export: error: {message}"
    assert not out.exists()  # and no empty output folder


def test_cli_interrupted_conversion_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ex.save, "to_mlprogram", _interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        main(["--size", "256", "256", "--attention-mode", "global", "--output-dir", str(out)])
    assert not out.exists()


def test_cli_reports_build_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--size", "250", "256", "--attention-mode", "global", "--output-dir", str(tmp_path)])
    assert err.value.code == 2
    assert "250" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_cli_unwritable_folder_and_existing_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ex.save, "export_moat", _no_conversion)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as err:
        main(["--size", "256", "256", "--output-dir", str(blocker / "out")])
    assert err.value.code == 2
    assert re.search(r"cannot write to the output folder .*a_file/out", capsys.readouterr().err)
    existing = tmp_path / "tiny-moat-0_localAttn_batch1_256x256_PEType.SINGLE_HEAD_RPE_split-head_True.mlpackage"
    existing.mkdir()
    with pytest.raises(SystemExit) as err:
        main(["--size", "256", "256", "--attention-mode", "local", "--output-dir", str(tmp_path)])
    assert err.value.code == 2
    assert f"{existing} already exist(s); pass --overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_exports_tiny_moat_0_local(tmp_path, capsys):
    import coremltools as ct

    assert main(["--size", "256", "256", "--attention-mode", "local", "--output-dir", str(tmp_path)]) == 0
    name = "tiny-moat-0_localAttn_batch1_256x256_PEType.SINGLE_HEAD_RPE_split-head_True.mlpackage"
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"\[1/1\] {re.escape(str(tmp_path / name))}  \d+\.\d s \(\d+\.\d s CPU\)  \d+\.\d\d MB", line), line
    meta = read_metadata(tmp_path / name)
    assert meta["inputs"] == ["x"]
    assert meta["outputs"] == ["stage_0", "stage_1", "stage_2", "stage_3"]
    assert meta["user_defined"]["ane_vit.version"] == ane_vit.__version__
    cfg = meta["config"]
    assert (cfg["base_arch"], cfg["attention_mode"], cfg["pe_type"], cfg["split_head"]) == (
        "tiny-moat-0", "local", "SINGLE_HEAD_RPE", True)
    assert cfg["window_size"][2:] == [[8, 8], [8, 8]]  # the seed's local window
    spec = ct.models.MLModel(str(tmp_path / name), skip_model_load=True).get_spec()
    shapes = [list(o.type.multiArrayType.shape) for o in spec.description.output]
    assert shapes == [[1, 32, 64, 64], [1, 64, 32, 32], [1, 128, 16, 16], [1, 256, 8, 8]]


def test_save_program_resolves_tilde_once_and_saves_atomically(tmp_path, monkeypatch):
    from ane_vit.export import resolve_target, save_program, to_mlprogram

    monkeypatch.setenv("HOME", str(tmp_path))
    mlmodel = to_mlprogram(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 4, 4))
    target = save_program(mlmodel, "~/conv.mlpackage")
    assert target == tmp_path / "conv.mlpackage" and (target / "Manifest.json").is_file()
    assert not (Path.cwd() / "~").exists()
    with pytest.raises(FileExistsError, match="conv.mlpackage already exists; pass overwrite=True"):
        save_program(mlmodel, "~/conv.mlpackage")  # the check sees what the save would replace
    with pytest.raises(ValueError, match=r"saved as a \.mlpackage folder, got 'conv\.mlmodel'"):
        resolve_target("conv.mlmodel")
    assert save_program(mlmodel, target, overwrite=True) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.mlpackage"]  # no staging folder left


def test_the_deployment_targets_of_the_command_line_are_coremltools_ml_program_targets():
    import coremltools as ct

    from ane_vit.export import DEPLOYMENT_TARGETS

    ml_program = [name for name, t in ct.target.__members__.items() if t.value >= ct.target.iOS15.value and "_" not in name]
    assert sorted(DEPLOYMENT_TARGETS) == sorted(ml_program)
