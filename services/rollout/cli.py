"""``rtml models ...`` and ``rtml rollout ...``: the rollout service's REST API from the shell.

The service is found at ``RTML_ROLLOUT_URL`` (default ``http://<RTML_HTTP_HOST>:<RTML_ROLLOUT_HTTP_PORT>``)
and mutating commands send ``RTML_ADMIN_TOKEN``. Replies print as JSON; an error
reply prints its message to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from shared.settings import CommonSettings, SettingsError

from .settings import DEFAULT_HTTP_PORT


def _target(env: Mapping[str, str]) -> tuple[str, str]:
    common = CommonSettings.from_env(env, service="rollout", default_http_port=DEFAULT_HTTP_PORT)
    url = env.get("RTML_ROLLOUT_URL") or f"http://{common.http_host}:{common.http_port}"
    return url.rstrip("/"), common.admin_token


async def _call(method: str, path: str, *, json_body: Any = None, form: aiohttp.FormData | None = None) -> int:
    base, token = _target(os.environ)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.request(method, base + path, json=json_body, data=form, headers=headers) as response,
        ):
            text = await response.text()
    except aiohttp.ClientError as error:
        print(f"cannot reach the rollout service at {base}: {error}", file=sys.stderr)
        return 2
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    if response.status >= 400:
        message = body["error"]["message"] if isinstance(body, dict) and "error" in body else text
        print(f"error {response.status}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2, sort_keys=True))
    return 0


Command = Callable[[argparse.Namespace], int]


def _run(
    method: str, path: Callable[[argparse.Namespace], str], body: Callable[[argparse.Namespace], Any] | None = None
) -> Command:
    def command(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(_call(method, path(args), json_body=None if body is None else body(args)))
        except (SettingsError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return command


def _register(args: argparse.Namespace) -> int:
    try:
        artifact = Path(args.onnx).read_bytes()
        if args.metadata:
            metadata = Path(args.metadata).read_text()
        else:
            features = [{"name": name} for name in args.features.split(",") if name]
            metadata = json.dumps({"features": features, "threshold": args.threshold, "description": args.description})
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    form = aiohttp.FormData()
    form.add_field("artifact", artifact, filename=Path(args.onnx).name, content_type="application/octet-stream")
    form.add_field("metadata", metadata, content_type="application/json")
    return asyncio.run(_call("POST", f"/models/{args.model}/versions", form=form))


def _rollout_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"candidate": args.candidate, "strategy": args.strategy}
    if args.stable is not None:
        body["stable"] = args.stable
    if args.steps:
        body["steps"] = [float(s) for s in args.steps.split(",")]
    for key in ("dwell_s", "duration_s", "shadow_share", "window_s"):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    if args.gates:
        body["gates"] = json.loads(args.gates)
    return body


def _action_path(action: str) -> Callable[[argparse.Namespace], str]:
    def path(args: argparse.Namespace) -> str:
        return f"/models/{args.model}/rollouts/{args.rollout_id}/{action}"

    return path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = subparsers.add_parser("models", help="the model registry: register, ls, show, archive (REST API)")
    reg = models.add_subparsers(dest="models_command", required=True)
    p = reg.add_parser("register", help="register a new version of a model")
    p.add_argument("model")
    p.add_argument("--onnx", required=True, help="the ONNX file")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--metadata", help="a JSON file with the version's metadata")
    group.add_argument("--features", help="comma-separated feature names, in input order")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--description", default="")
    p.set_defaults(func=_register)
    p = reg.add_parser("ls", help="list models")
    p.set_defaults(func=_run("GET", lambda a: "/models"))
    p = reg.add_parser("show", help="a model, or one of its versions")
    p.add_argument("model")
    p.add_argument("--version", type=int)
    p.set_defaults(func=_run("GET", lambda a: f"/models/{a.model}" + (f"/versions/{a.version}" if a.version else "")))
    p = reg.add_parser("archive", help="archive a version")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.set_defaults(func=_run("POST", lambda a: f"/models/{a.model}/versions/{a.version}/archive"))

    rollout = subparsers.add_parser("rollout", help="shadow, canary and blue-green rollouts")
    ro = rollout.add_subparsers(dest="rollout_command", required=True)
    p = ro.add_parser("start", help="start a rollout of a candidate version")
    p.add_argument("model")
    p.add_argument("--candidate", type=int, required=True)
    p.add_argument("--strategy", choices=["shadow", "canary", "bluegreen"], default="canary")
    p.add_argument("--stable", type=int)
    p.add_argument("--steps", help="canary weights, e.g. 5,25,50,100")
    p.add_argument("--dwell-s", dest="dwell_s", type=float)
    p.add_argument("--duration-s", dest="duration_s", type=float)
    p.add_argument("--shadow-share", dest="shadow_share", type=float)
    p.add_argument("--window-s", dest="window_s", type=float)
    p.add_argument("--gates", help="JSON object of gate overrides")
    p.set_defaults(func=_run("POST", lambda a: f"/models/{a.model}/rollouts", _rollout_body))
    p = ro.add_parser("ls", help="a model's rollouts")
    p.add_argument("model")
    p.set_defaults(func=_run("GET", lambda a: f"/models/{a.model}/rollouts"))
    p = ro.add_parser("show", help="a rollout with its timeline")
    p.add_argument("model")
    p.add_argument("rollout_id")
    p.set_defaults(func=_run("GET", lambda a: f"/models/{a.model}/rollouts/{a.rollout_id}"))
    for action in ("promote", "pause", "resume", "abort"):
        p = ro.add_parser(action, help=f"{action} a rollout")
        p.add_argument("model")
        p.add_argument("rollout_id")
        p.add_argument("--reason", default=f"{action} from the command line")
        p.set_defaults(
            func=_run(
                "POST",
                _action_path(action),
                lambda a: {"reason": a.reason},
            )
        )
    p = ro.add_parser("stable", help="serve one version alone (no rollout active)")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.set_defaults(func=_run("POST", lambda a: f"/models/{a.model}/stable", lambda a: {"version": a.version}))
    p = ro.add_parser("routing", help="the routing policy replicas follow now")
    p.add_argument("model")
    p.set_defaults(func=_run("GET", lambda a: f"/models/{a.model}/routing"))
