"""HTTP API on the daemon's event loop: health, readiness, metrics and /v1 JSON routes."""

from __future__ import annotations

import hmac
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bae_core import wire

from . import metrics

OPEN = ("/healthz", "/readyz")


def make_app(daemon) -> web.Application:
    token = daemon.http_token

    @web.middleware
    async def auth(request: web.Request, handler):
        if token and request.path not in OPEN:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token",
                                          "fix": "send 'Authorization: Bearer <token>'"},
                                         status=401)
        return await handler(request)

    registry = metrics.make_registry(daemon)
    app = web.Application(middlewares=[auth])

    async def healthz(_):
        problems = daemon.health()
        return web.json_response({"status": "degraded" if problems else "ok",
                                  "problems": problems,
                                  "loop_lag_p99_s": daemon.lag.quantiles()["0.99"]})

    async def readyz(_):
        if daemon.ready:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False}, status=503)

    async def prom(_):
        return web.Response(body=metrics.render(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats(_):
        return web.json_response(daemon.stats())

    async def services(_):
        e = daemon.engine
        return web.json_response({"services": [e.service_summary(s)
                                               for s in range(e.services.rows)]})

    def unknown_service(request):
        return web.json_response({"error": f"unknown service {request.match_info['name']!r}",
                                  "fix": "GET /v1/services lists the known ones"}, status=404)

    async def service(request):
        e = daemon.engine
        slot = e.find_service(request.match_info["name"])
        if slot < 0:
            return unknown_service(request)
        return web.json_response(e.service_summary(slot))

    async def forecast(request):
        e = daemon.engine
        slot = e.find_service(request.match_info["name"])
        if slot < 0:
            return unknown_service(request)
        try:
            horizon = int(request.query.get("horizon", "12"))
            if not 1 <= horizon <= 10_000:
                raise ValueError
        except ValueError:
            return web.json_response({"error": "horizon must be an integer 1..10000",
                                      "fix": "e.g. ?horizon=12"}, status=400)
        return web.json_response({"service": e.service_name(int(e.services.slots.ids[slot])),
                                  "bucket_s": daemon.cfg.model.bucket_s, "horizon": horizon,
                                  "unit": "requests/s", "models":
                                  e.service_forecast(slot, horizon)})

    def user_route(view_of):
        async def route(request):
            key = request.match_info["id"]
            view = view_of(key, int(time.time() * 1e6))
            if view is None:
                return web.json_response({"error": f"unknown or evicted user {key!r}",
                                          "fix": "use the numeric id or a registered name"},
                                         status=404)
            return web.json_response(view)
        return route

    async def prefetch(request):
        e = daemon.engine
        slot = e.find_service(request.match_info["name"])
        if slot < 0:
            return unknown_service(request)
        return web.json_response({"service": e.service_name(int(e.services.slots.ids[slot])),
                                  "resources": e.prefetch_list(slot)})

    async def segment(request):
        key = request.match_info["id"]
        view = daemon.engine.segment_view(key)
        if view is None:
            return web.json_response({"error": f"unknown segment {key!r}",
                                      "fix": "use the numeric segment id of PROFILE records"},
                                     status=404)
        return web.json_response(view)

    async def allocations(_):
        e = daemon.engine
        recs = e.allocations(int(time.time() * 1e6))
        return web.json_response({"sequence": daemon.seq, "instance": str(daemon.instance_id),
                                  "advisory": daemon.cfg.policy.shadow, "allocations": [
            {"service": e.service_name(int(r["service"])), "id": int(r["service"]),
             "desired_replicas": int(r["desired_replicas"]),
             "rps_per_replica": float(r["rps_per_replica"]),
             "tiers": {wire.Tier(int(t["tier"])).name.lower(): {
                 "replicas": int(t["replicas"]), "maxconn": int(t["maxconn"]),
                 "quantile": round(float(t["quantile"]), 4)}
                 for t in e.published_tiers.get(int(r["service"]), [])}} for r in recs]})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prom)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/v1/services", services)
    app.router.add_get("/v1/services/{name}", service)
    app.router.add_get("/v1/services/{name}/forecast", forecast)
    app.router.add_get("/v1/users/{id}", user_route(daemon.engine.user_profile))
    app.router.add_get("/v1/allocations", allocations)
    app.router.add_get("/v1/predictions/users/{id}",
                       user_route(daemon.engine.predict_user))
    app.router.add_get("/v1/prefetch/{name}", prefetch)
    app.router.add_get("/v1/segments/{id}", segment)
    return app
