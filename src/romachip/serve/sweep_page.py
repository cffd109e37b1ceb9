"""`romachip sweep show RESULTS --serve`: a sweep's Pareto front as an interactive page (no image needed).

GET /sweep (the page; / redirects to it), GET /api/sweep (per workload: objectives, axes, every metric
column, the feasible designs with their axis values and numbers, which are on the front), and GET
/api/sweep/export?workload=W&key=K (the design as chip YAML, written by `romachip.dse.answer.export_rows`
into RESULTS/exported/, the file `romachip simulate --chip` runs). The page is read-only but for that
export; it listens on loopback unless told otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse

from romachip.dse import load_results
from romachip.dse.answer import analyse, export_rows
from romachip.dse.spec import METRICS
from romachip.errors import SweepError
from romachip.serve.errors import ApiError, install_handlers
from romachip.serve.routes.web import page_response, static_response

FILES = {"sweep.js": "text/javascript", "style.css": "text/css"}


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return float(v)


def _metric_columns(rows: list[dict]) -> list[str]:
    """Every metric column the rows hold numbers for (`tokens_per_s`, `tokens_per_s@0`, ...), in METRICS order."""
    present = {k for r in rows for k, v in r.items() if k.split("@")[0] in METRICS and _number(v) is not None}
    return sorted(present, key=lambda k: (list(METRICS).index(k.split("@")[0]), k))


def sweep_document(results_dir: str | Path) -> dict:
    """What the page draws: per workload, the feasible designs (front ones marked) and their numbers."""
    results = load_results(results_dir)
    spec, axes = results.spec, results.axes()
    out = []
    for a in analyse(results):
        front = {r["key"] for r in a.front}
        metrics = _metric_columns(a.feasible)
        points = [
            {
                "key": r["key"],
                "front": r["key"] in front,
                "base": bool(r["base"]),
                "axes": {ax: r.get(f"axis:{ax}") for ax in axes},
                "metrics": {m: _number(r.get(m)) for m in metrics},
            }
            for r in a.feasible
        ]
        out.append({
            "workload": a.workload,
            "objectives": [{"metric": o.metric, "goal": o.direction} for o in spec.objectives],
            "metrics": [{"name": m, "goal": METRICS[m.split("@")[0]][0], "what": METRICS[m.split("@")[0]][1]}
                        for m in metrics],
            "axes": axes,
            "rows": len(a.rows),
            "by_status": a.by_status,
            "points": points,
        })  # fmt: skip
    return {"sweep": spec.name, "folder": Path(results_dir).name, "workloads": out}


def create_sweep_app(results_dir: str | Path) -> FastAPI:
    """The page's app over one results folder (read when the app is made, so a bad folder fails at once)."""
    document = sweep_document(results_dir)
    app = FastAPI(title="romachip sweep", docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/sweep")

    @app.get("/sweep", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return page_response("sweep.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> FileResponse:
        return static_response(name, FILES)

    @app.get("/api/sweep")
    async def data() -> dict:
        return document

    @app.get("/api/sweep/export")
    async def export(workload: str = Query(...), key: str = Query(...)) -> PlainTextResponse:
        results = load_results(results_dir)
        try:
            answers = analyse(results, workload)
        except SweepError as exc:
            raise ApiError(404, str(exc), param="workload", code="not_found") from None
        row = next((r for r in answers[0].feasible if r["key"] == key), None)
        if row is None:
            raise ApiError(404, f"no feasible design {key!r} in workload {workload!r}", param="key", code="not_found")
        (path,) = export_rows([row], Path(results_dir) / "exported", prefix=workload)
        return PlainTextResponse(path.read_text(encoding="utf-8"), media_type="application/yaml",
                                 headers={"X-Romachip-Path": str(path.resolve()),
                                          "Content-Disposition": f'attachment; filename="{path.name}"'})  # fmt: skip

    return app
