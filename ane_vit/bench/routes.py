"""The routes of local attention, compared on what their converted programs contain.

Local attention cuts a stage map into windows. Three routes compute the same function:

* ``channels_last`` (the default of ``ane_vit.moat``, the seed's route): a channels-last map,
  the rank-5 ``window_partition``, the windows on the batch axis as ``(B*nW, C, 1, N)``;
* ``channels_first``: the map stays ``(B, C, H, W)``, the windows go along axis 2,
  ``(B, C, nW, N)`` (``window_partition_nchw``);
* ``batch_rank4``: the windows on the batch axis as in the seed's route, but every tensor at
  rank 4, as in the window helper of Apple's SAM3 code for iOS (apple/coreai-models, commit
  86b363d, ``python/src/coreai_models/models/ios/sam3/primitives/window.py``): the partition folds a window's columns
  and channels into one last axis, ``(B*nH, wh, nW, ww*C)``. A candidate for the comparison
  only, not a ``local_layout`` of the package (``BatchWindowsRank4Block``).

``compare_local_routes`` converts each route of a MOAT, with the reference's random,
trained-looking weights ported into it, and records the facts of each program: ops, layout
ops, the layout ops that move the last (width) axis and the bytes they write, padded bytes
as two bounds, max rank (``ane_vit.analysis``). ``python -m ane_vit.bench --local-routes``
writes them, with their provenance, to ``results/local_routes.json``; chapter 5 reads it.
Facts about programs, not latency.

Shapes: MOAT ``x: (1, 3, 256, 256) -> 4 NCHW stage maps``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..moat import MOATBlock
from ..partition import _size

__all__ = ["LOCAL_ROUTES", "ROUTE_FACTS", "BatchWindowsRank4Block", "route_model", "compare_local_routes", "local_routes_table"]

#: The routes compared: the plain reference and the three ANE routes (see the module docstring).
LOCAL_ROUTES = ("reference", "channels_last", "channels_first", "batch_rank4")
#: The program facts recorded per route (keys of ``ProgramReport.summary()``).
ROUTE_FACTS = (
    "ops", "layout_ops", "layout_ops_moving_width", "layout_ops_keeping_width",
    "layout_bytes_moving_width_padded", "layout_bytes_moving_width_padded_lower",
    "layout_bytes_padded", "layout_bytes_padded_lower",
    "activation_bytes_dense", "activation_bytes_padded", "activation_bytes_padded_lower", "max_rank",
)


class BatchWindowsRank4Block(MOATBlock):
    """A MOAT block whose local attention puts the windows on the batch axis at rank 4.

    The steps of the window helper in Apple's SAM3 code for iOS (cited in the module
    docstring), written here for ``(B, C, H, W)`` maps: channels-last, fold a window's
    ``ww`` columns and the channels into the last axis, swap the in-window rows with the
    window columns, unfold to ``(B*nW, N, C)`` tokens and move them to ``(B*nW, C, 1, N)``;
    the norm, attention and residual run on the windows, and the same steps run backwards.
    A map that is one window is reshaped to ``(B, C, 1, H*W)`` instead, as the package does.
    Global attention is the parent's. Build one with ``route_model(model, "batch_rank4")``.

    Shapes: ``x: (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)``
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention_mode != "local":
            return super().forward(x)
        x = self.mbconv(x)  # (B, C, H, W)
        b, c, h, w = x.shape
        wh, ww = self.window_size
        nh, nw = h // wh, w // ww
        if _size(nh) * _size(nw) == 1:  # one window: the map is the window (sizes fixed when traced)
            xw = x.reshape(b, c, 1, h * w)  # (B, C, 1, N)
            return (xw + self.attention.forward_bc1s(self.attn_norm(xw))).reshape(b, c, h, w)
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C): channels last
        t = t.reshape(b * nh, wh, nw, ww * c)  # (B*nH, wh, nW, ww*C): a window row's columns and channels folded
        t = t.permute(0, 2, 1, 3)  # (B*nH, nW, wh, ww*C): window column before in-window row, last axis kept
        t = t.reshape(b * nh * nw, wh * ww, c)  # (B*nW, N, C): tokens of each window
        xw = t.permute(0, 2, 1).unsqueeze(2)  # (B*nW, C, 1, N): windows on the batch axis
        yw = xw + self.attention.forward_bc1s(self.attn_norm(xw))  # (B*nW, C, 1, N): norm, attention, residual
        t = yw.squeeze(2).permute(0, 2, 1)  # (B*nW, N, C)
        t = t.reshape(b * nh, nw, wh, ww * c)  # (B*nH, nW, wh, ww*C)
        t = t.permute(0, 2, 1, 3)  # (B*nH, wh, nW, ww*C)
        t = t.reshape(b, h, w, c)  # (B, H, W, C)
        return t.permute(0, 3, 1, 2)  # (B, C, H, W)


def route_model(model: nn.Module, route: str) -> nn.Module:
    """``model`` (an ANE MOAT) with its local attention on ``route`` (``LOCAL_ROUTES`` minus
    ``"reference"``); changed in place and returned. Weights are untouched: the routes compute
    the same function.

    Raises:
        ValueError: for another route.
    """
    routes = LOCAL_ROUTES[1:]
    if route not in routes:
        raise ValueError(f"route must be one of {routes}, got {route!r}")
    for block in model.modules():
        if isinstance(block, MOATBlock):
            if route == "batch_rank4":
                block.__class__ = BatchWindowsRank4Block  # same parameters, another forward
            else:
                block.__class__ = MOATBlock
                block.local_layout = route
    return model


def compare_local_routes(
    archs: Sequence[str] = ("tiny-moat-0", "tiny-moat-1"),
    image_size: int = 256,
    pe_type: str = "SINGLE_HEAD_RPE",
    seed: int = 0,
    routes: Sequence[str] = LOCAL_ROUTES,
    progress: Callable[[str], None] | None = None,
    command: str | None = None,
    **model_kwargs,
) -> dict:
    """Convert every route of each architecture (local attention, default 8x8 windows at 256)
    and record its program facts; ``{"provenance", "results"}``, one row per (arch, route).

    The reference gets ``randomize_(seed)`` weights, ported into every ANE route, so all
    compute one function (each row records its PyTorch float32 PSNR against the reference).
    ``model_kwargs`` go to both builders (e.g. ``num_blocks`` for a quick run).
    """
    from ..analysis import analyze
    from ..attention import PEType
    from ..export import to_mlprogram
    from ..moat import build_model
    from ..port.moat import port_moat_weights
    from ..reference.moat import build_reference_model
    from ..testing import psnr, randomize_
    from .measure import provenance
    from .run import _outputs

    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' progress bars
    unknown = [r for r in routes if r not in LOCAL_ROUTES]
    if unknown:
        raise ValueError(f"routes must be among {LOCAL_ROUTES}, got {unknown}")
    prov = provenance(command, timing=False, compute_precision="float16", pe_type=pe_type, image_size=image_size,
                      seed=seed, **{k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()})
    prov["weights"] = f"randomize_(reference, seed={seed}), ported into every ANE route"
    prov["batch_rank4"] = ("windows on the batch axis at rank 4, the steps of apple/coreai-models (commit 86b363d) "
                           "python/src/coreai_models/models/ios/sam3/primitives/window.py, as "
                           "ane_vit.bench.routes.BatchWindowsRank4Block")
    rows = []
    for arch in archs:
        kwargs = dict(shape=(1, 3, image_size, image_size), base_arch=arch, attention_mode="local",
                      pe_type=PEType[pe_type], **model_kwargs)
        config, reference = build_reference_model(**kwargs)
        randomize_(reference, seed=seed)
        reference.eval()
        x = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = _outputs(reference(x))
        for route in routes:
            if route == "reference":
                model = reference
            else:
                model = route_model(port_moat_weights(reference, build_model(**kwargs)[1]).eval(), route)
            with torch.no_grad():
                got = _outputs(model(x))
            summary = analyze(to_mlprogram(model, x)).summary()
            row = {"arch": arch, "route": route, "input_shape": [1, 3, image_size, image_size], "pe_type": pe_type,
                   "window_size": [list(w) if w else None for w in config.window_size],
                   "facts": {k: summary[k] for k in ROUTE_FACTS},
                   "pytorch_vs_reference_psnr_db": min(psnr(e, g) for e, g in zip(expected, got))}
            rows.append(row)
            if progress is not None:
                f = row["facts"]
                progress(f"{arch} {route}: {f['ops']} ops, {f['layout_ops']} layout ops, "
                         f"width-moving {f['layout_bytes_moving_width_padded_lower'] / 1e6:.2f}-"
                         f"{f['layout_bytes_moving_width_padded'] / 1e6:.2f} MB")
    return {"provenance": prov, "results": rows}


def local_routes_table(results: dict, arch: str | None = None) -> str:
    """Markdown, one line per route (and architecture, unless ``arch`` picks one): ops,
    layout ops with those that move the last axis in brackets, the bytes those write and the
    activation bytes as ``lower-upper`` (padded to 64-byte rows: lower bound, only the
    program's outputs padded; upper, every op output), max rank. MB = 10^6 bytes."""
    rows = [r for r in results["results"] if arch is None or r["arch"] == arch]
    if not rows:
        raise ValueError(f"no rows for arch {arch!r}; the file has {sorted({r['arch'] for r in results['results']})}")
    head = ([] if arch else ["model"]) + ["route", "ops", "layout ops (moving width)", "width-moving layout MB",
                                          "padded activation MB", "max rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * (len(head) - 5) + ["---:"] * 5) + "|"]
    for r in rows:
        f = r["facts"]
        cells = ([] if arch else [r["arch"]]) + [
            r["route"], str(f["ops"]), f"{f['layout_ops']} ({f['layout_ops_moving_width']})",
            f"{f['layout_bytes_moving_width_padded_lower'] / 1e6:.2f}-{f['layout_bytes_moving_width_padded'] / 1e6:.2f}",
            f"{f['activation_bytes_padded_lower'] / 1e6:.1f}-{f['activation_bytes_padded'] / 1e6:.1f}", str(f["max_rank"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
