"""A Kubernetes API emulator faithful enough for kopf, the `kubernetes` client and kubectl.

No kube-apiserver can run on these machines, and stock kmock 0.8 misses what kopf
relies on (see ../shared/notes/testing-kubernetes.md). This one implements, for the
resources the operator touches:

- discovery (/api, /apis, group/version resource lists, /version);
- create (201, uid, resourceVersion, generation, creationTimestamp, generateName,
  409 AlreadyExists), get, list (labelSelector, kind/apiVersion/metadata.resourceVersion),
  replace (409 on a stale resourceVersion), merge/strategic/JSON patch (a failed
  ``test`` op answers 422), delete (finalizers → deletionTimestamp; ownerReference
  garbage collection), Kubernetes ``Status`` errors with proper reasons;
- the ``status`` subresource split (the main endpoint ignores status; /status only
  changes status); generation bumps only on spec changes; no-op writes change nothing;
- watch from a resourceVersion (events after it, then live), JSON lines, timeoutSeconds,
  and watch-list (``sendInitialEvents`` + the initial-events-end bookmark kubectl waits for);
- pods/log with tailLines; CRD registration on POST;
- CRD openAPIV3Schema defaulting + validation and ``x-kubernetes-validations`` (CEL),
  answering 422 Invalid like the real API server.
"""

from __future__ import annotations

import asyncio
import copy
import json
import string
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from random import Random
from typing import Any

import yaml
from aiohttp import web

from .crd_validation import CrdValidator

Key = tuple[str, str, str]  # (group, version, plural)


@dataclass
class ResourceInfo:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    validator: CrdValidator | None = None

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN = [
    ResourceInfo("", "v1", "namespaces", "Namespace", False, ("status",), ("ns",)),
    ResourceInfo("", "v1", "pods", "Pod", True, ("status", "log"), ("po",)),
    ResourceInfo("", "v1", "services", "Service", True, ("status",), ("svc",)),
    ResourceInfo("", "v1", "configmaps", "ConfigMap", True, (), ("cm",)),
    ResourceInfo("", "v1", "secrets", "Secret", True),  # Helm's release storage
    ResourceInfo("", "v1", "events", "Event", True, (), ("ev",)),
    ResourceInfo("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("status",), ("pvc",)),
    ResourceInfo("", "v1", "serviceaccounts", "ServiceAccount", True, (), ("sa",)),
    ResourceInfo("apps", "v1", "deployments", "Deployment", True, ("status",), ("deploy",)),
    ResourceInfo("batch", "v1", "jobs", "Job", True, ("status",), ()),
    ResourceInfo("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, ("status",), ("crd",)),
    ResourceInfo("events.k8s.io", "v1", "events", "Event", True, (), ()),
    # What the Helm chart installs besides the operator's own kinds.
    ResourceInfo("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceInfo("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("status",), ("pdb",)),
    ResourceInfo("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, (), ("netpol",)),
    ResourceInfo("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", True),
]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": self.message, "reason": self.reason, "code": self.code}  # fmt: skip
        if self.details:
            status["details"] = self.details
        return status


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")] if path else []


def json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 (add, remove, replace, test); a failed test raises 422 as kube-apiserver does."""
    doc = copy.deepcopy(document)
    for op in operations:
        parts = _pointer(op["path"])
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else ""
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind}")
    return doc


def matches_selector(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        term = term.strip()
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Watcher:
    key: Key
    namespace: str | None
    selector: str | None
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


class KubernetesApiEmulator:
    def __init__(self) -> None:
        self.resources: dict[Key, ResourceInfo] = {(r.group, r.version, r.plural): r for r in BUILTIN}
        self.objects: dict[Key, dict[tuple[str, str], dict[str, Any]]] = {}
        self.history: list[tuple[int, str, Key, dict[str, Any]]] = []
        self.logs: dict[tuple[str, str], str] = {}
        self.lock = threading.RLock()
        self.revision = 1
        self.watchers: list[Watcher] = []
        self.random = Random(0)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.url = ""
        self.requests: list[tuple[str, str]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            self._runner = web.AppRunner(app, handle_signals=False)
            self.loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=0.5)
            self.loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True, name="api-emulator")
        self.thread.start()
        ready.wait(10)
        return self.url

    def stop(self) -> None:
        if self.loop is None:
            return

        async def shutdown() -> None:
            for watcher in list(self.watchers):
                watcher.queue.put_nowait(None)
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread:
            self.thread.join(10)

    def register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema", {})
            info = ResourceInfo(
                spec["group"], version["name"], spec["names"]["plural"], spec["names"]["kind"],
                spec["scope"] == "Namespaced", tuple(version.get("subresources", {}).keys()),
                tuple(spec["names"].get("shortNames", [])), CrdValidator(schema),
            )  # fmt: skip
            self.resources[(info.group, info.version, info.plural)] = info

    def register_crd_file(self, path: Path) -> None:
        self.register_crd(yaml.safe_load(path.read_text()))

    # -- direct access for tests (thread-safe) --------------------------------------------------
    def list_objects(self, group: str, version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            items = self.objects.get((group, version, plural), {})
            return [copy.deepcopy(o) for (ns, _), o in sorted(items.items()) if namespace is None or ns == namespace]

    def set_log(self, namespace: str, pod: str, text: str) -> None:
        with self.lock:
            self.logs[(namespace, pod)] = text

    # -- HTTP ---------------------------------------------------------------------------------
    def _route(self, path: str) -> tuple[Key | None, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None, None, None, None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":  # /namespaces/<ns>/<plural>[/<name>[/<sub>]]
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None, None, None, None
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        return (group, version, plural), namespace, name, sub

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            discovery = self._discovery(request.path)
            if discovery is not None:
                return web.json_response(discovery)
            key, namespace, name, sub = self._route(request.path)
            if key is None or key not in self.resources:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
            info = self.resources[key]
            if request.method == "GET" and name is None and request.query.get("watch") in ("true", "1"):
                return await self._watch(request, info, namespace)
            if request.method == "GET" and name is None:
                return web.json_response(self._list(info, namespace, request.query.get("labelSelector")))
            if "protobuf" in request.headers.get("Content-Type", "") or "cbor" in request.headers.get("Content-Type", ""):
                # JSON only; client-go then retries the request as JSON (as with servers lacking protobuf).
                raise ApiError(415, "UnsupportedMediaType", "only application/json is supported")
            if request.method == "POST" and name is None:
                body = await request.json()
                created = self._create(info, namespace, body)
                return web.json_response(created, status=201)
            if name is None:
                raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on a collection")
            if sub == "log" and key == ("", "v1", "pods"):
                return self._log(namespace or "", name, request.query.get("tailLines"))
            if sub is not None and sub not in info.subresources:
                raise ApiError(404, "NotFound", f"{info.plural} has no {sub} subresource")
            if request.method == "GET":
                return web.json_response(self._get(info, namespace, name))
            if request.method == "PUT":
                return web.json_response(self._update(info, namespace, name, await request.json(), sub, replace=True))
            if request.method == "PATCH":
                content_type = request.headers.get("Content-Type", "application/merge-patch+json")
                return web.json_response(self._patch(info, namespace, name, await request.json(), content_type, sub))
            if request.method == "DELETE":
                return web.json_response(self._delete(info, namespace, name))
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported")
        except ApiError as error:
            return web.json_response(error.body(), status=error.code)

    def _discovery(self, path: str) -> dict[str, Any] | None:
        path = path.rstrip("/")
        if path == "/openapi/v3":
            return {"paths": {}}  # no published schemas: clients skip client-side validation
        if path == "/version":
            return {"major": "1", "minor": "37", "gitVersion": "v1.37.0-emulator", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        groups: dict[str, list[str]] = {}
        for info in self.resources.values():
            if info.group:
                groups.setdefault(info.group, [])
                if info.version not in groups[info.group]:
                    groups[info.group].append(info.version)

        def group_doc(name: str) -> dict[str, Any]:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": versions, "preferredVersion": versions[0]}

        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in sorted(groups)]}
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return group_doc(parts[1])
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis" and parts[1] in groups):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            resources = []
            for info in self.resources.values():
                if (info.group, info.version) != (group, version):
                    continue
                resources.append({"name": info.plural, "singularName": info.kind.lower(), "namespaced": info.namespaced,
                                  "kind": info.kind, "verbs": VERBS, "shortNames": list(info.short_names)})  # fmt: skip
                for sub in info.subresources:
                    verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
                    resources.append({"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                                      "kind": info.kind if sub != "log" else "Pod", "verbs": verbs})  # fmt: skip
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}".lstrip("/"),
                    "resources": resources}  # fmt: skip
        return None

    # -- storage ------------------------------------------------------------------------------
    def _bump(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _record(self, event_type: str, info: ResourceInfo, obj: dict[str, Any]) -> None:
        key = (info.group, info.version, info.plural)
        snapshot = copy.deepcopy(obj)
        self.history.append((int(obj["metadata"]["resourceVersion"]), event_type, key, snapshot))
        for watcher in list(self.watchers):
            if watcher.key != key:
                continue
            if watcher.namespace and obj["metadata"].get("namespace") != watcher.namespace:
                continue
            if not matches_selector(obj["metadata"].get("labels") or {}, watcher.selector):
                continue
            assert self.loop is not None
            self.loop.call_soon_threadsafe(watcher.queue.put_nowait, {"type": event_type, "object": snapshot})

    def _store(self, info: ResourceInfo) -> dict[tuple[str, str], dict[str, Any]]:
        return self.objects.setdefault((info.group, info.version, info.plural), {})

    def _get(self, info: ResourceInfo, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self._store(info).get((namespace or "", name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{info.plural}{"." + info.group if info.group else ""} "{name}" not found',
                               {"name": name, "group": info.group, "kind": info.plural})  # fmt: skip
            return copy.deepcopy(obj)

    def _list(self, info: ResourceInfo, namespace: str | None, selector: str | None) -> dict[str, Any]:
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._store(info).items())
                if (namespace is None or ns == namespace) and matches_selector(obj["metadata"].get("labels") or {}, selector)
            ]
            return {"kind": f"{info.kind}List", "apiVersion": info.group_version,
                    "metadata": {"resourceVersion": str(self.revision)}, "items": items}  # fmt: skip

    def _ensure_namespace(self, namespace: str) -> None:
        store = self._store(self.resources[("", "v1", "namespaces")])
        if ("", namespace) not in store:
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "uid": str(uuid.uuid4()),
                   "resourceVersion": self._bump(), "creationTimestamp": now()}, "status": {"phase": "Active"}}  # fmt: skip
            store[("", namespace)] = obj

    def _validate(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        if info.validator is None:
            return obj
        obj = info.validator.apply_defaults(obj)
        causes = info.validator.validate(obj)
        if causes:
            name = obj["metadata"].get("name", "")
            summary = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
            raise ApiError(422, "Invalid", f'{info.kind}.{info.group} "{name}" is invalid: {summary}',
                           {"name": name, "group": info.group, "kind": info.kind, "causes": causes})  # fmt: skip
        return obj

    def _create(self, info: ResourceInfo, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            obj = copy.deepcopy(body)
            metadata = obj.setdefault("metadata", {})
            if not metadata.get("name"):
                if not metadata.get("generateName"):
                    raise ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
                alphabet = string.ascii_lowercase + string.digits
                metadata["name"] = metadata["generateName"] + "".join(self.random.choice(alphabet) for _ in range(5))
            if info.namespaced:
                metadata["namespace"] = namespace or metadata.get("namespace") or "default"
                self._ensure_namespace(metadata["namespace"])
            key = (metadata.get("namespace", "") if info.namespaced else "", metadata["name"])
            store = self._store(info)
            if key in store:
                raise ApiError(409, "AlreadyExists", f'{info.plural} "{metadata["name"]}" already exists',
                               {"name": metadata["name"], "kind": info.plural})  # fmt: skip
            obj["apiVersion"], obj["kind"] = info.group_version, info.kind
            if "status" in info.subresources and info.validator is not None:
                obj.pop("status", None)  # custom resources: status only via /status
            obj = self._validate(info, obj)
            metadata = obj["metadata"]
            metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1, resourceVersion=self._bump())
            if info.kind == "Service":
                obj.setdefault("spec", {}).setdefault("clusterIP", f"10.96.{self.revision % 250}.{self.revision % 200 + 1}")
            if info.kind == "CustomResourceDefinition":
                self.register_crd(obj)
            store[key] = obj
            self._record("ADDED", info, obj)
            return copy.deepcopy(obj)

    def _commit(self, info: ResourceInfo, key: tuple[str, str], old: dict[str, Any], new: dict[str, Any], sub: str | None) -> dict[str, Any]:
        if "status" in info.subresources:
            if sub == "status":
                new = {**copy.deepcopy(old), "status": new.get("status", {})}
            else:
                new = {**new, "status": copy.deepcopy(old.get("status"))} if "status" in old else {k: v for k, v in new.items() if k != "status"}
        for immutable in ("uid", "creationTimestamp", "namespace", "name", "generation", "resourceVersion"):
            if immutable in old["metadata"]:
                new["metadata"][immutable] = old["metadata"][immutable]
            elif immutable in new["metadata"] and immutable in ("generation", "resourceVersion"):
                new["metadata"].pop(immutable)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if sub != "status":
            new = self._validate(info, new)
        if new == old:
            return copy.deepcopy(old)  # a no-op write changes nothing, not even resourceVersion
        spec_changed = {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }
        if spec_changed:
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._bump()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self._store(info)[key]
            self._record("DELETED", info, new)
            self._collect_garbage(new["metadata"]["uid"])
            return copy.deepcopy(new)
        self._store(info)[key] = new
        self._record("MODIFIED", info, new)
        return copy.deepcopy(new)

    def _update(self, info: ResourceInfo, namespace: str | None, name: str, body: dict[str, Any], sub: str | None, replace: bool) -> dict[str, Any]:
        with self.lock:
            key = (namespace or "" if info.namespaced else "", name)
            old = self._store(info).get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{info.plural} "{name}" not found', {"name": name, "kind": info.plural})
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if replace and wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {info.plural} "{name}": '
                               "the object has been modified; please apply your changes to the latest version and try again")  # fmt: skip
            return self._commit(info, key, old, copy.deepcopy(body), sub)

    def _patch(self, info: ResourceInfo, namespace: str | None, name: str, patch: Any, content_type: str, sub: str | None) -> dict[str, Any]:
        with self.lock:
            key = (namespace or "" if info.namespaced else "", name)
            old = self._store(info).get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{info.plural} "{name}" not found', {"name": name, "kind": info.plural})
            if "json-patch" in content_type:
                new = json_patch(old, patch)
            else:  # merge and strategic merge (lists replaced: enough for what we send)
                new = merge_patch(old, patch)
            return self._commit(info, key, old, new, sub)

    def _delete(self, info: ResourceInfo, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            key = (namespace or "" if info.namespaced else "", name)
            obj = self._store(info).get(key)
            if obj is None:
                raise ApiError(404, "NotFound", f'{info.plural} "{name}" not found', {"name": name, "kind": info.plural})
            if obj["metadata"].get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    new = copy.deepcopy(obj)
                    new["metadata"]["deletionTimestamp"] = now()
                    new["metadata"]["resourceVersion"] = self._bump()
                    self._store(info)[key] = new
                    self._record("MODIFIED", info, new)
                    return copy.deepcopy(new)
                return copy.deepcopy(obj)
            del self._store(info)[key]
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self._bump()
            self._record("DELETED", info, obj)
            self._collect_garbage(obj["metadata"]["uid"])
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name, "kind": info.plural}}

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background propagation: delete every object owned by ``owner_uid``."""
        for key, store in list(self.objects.items()):
            info = self.resources[key]
            for (namespace, name), obj in list(store.items()):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(owner.get("uid") == owner_uid for owner in owners):
                    try:
                        self._delete(info, namespace, name)
                    except ApiError:
                        pass

    def _log(self, namespace: str, pod: str, tail: str | None) -> web.Response:
        with self.lock:
            self._get(self.resources[("", "v1", "pods")], namespace, pod)
            text = self.logs.get((namespace, pod), "")
        lines = text.splitlines()
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        return web.Response(text="\n".join(lines) + ("\n" if lines else ""), content_type="text/plain")

    async def _watch(self, request: web.Request, info: ResourceInfo, namespace: str | None) -> web.StreamResponse:
        selector = request.query.get("labelSelector")
        since = request.query.get("resourceVersion")
        timeout = float(request.query.get("timeoutSeconds", "300"))
        watcher = Watcher((info.group, info.version, info.plural), namespace, selector)
        initial_events = request.query.get("sendInitialEvents") == "true"
        with self.lock:
            if since in (None, "", "0") or initial_events:
                backlog = [{"type": "ADDED", "object": obj} for obj in self._list(info, namespace, selector)["items"]]
            else:
                backlog = [
                    {"type": event_type, "object": copy.deepcopy(obj)}
                    for revision, event_type, key, obj in self.history
                    if key == watcher.key and revision > int(since)
                    and (namespace is None or obj["metadata"].get("namespace") == namespace)
                    and matches_selector(obj["metadata"].get("labels") or {}, selector)
                ]  # fmt: skip
            if initial_events:
                # Watch-list (kubectl >= 1.32): a bookmark marks the end of the initial state.
                backlog.append({"type": "BOOKMARK", "object": {
                    "kind": info.kind, "apiVersion": info.group_version,
                    "metadata": {"resourceVersion": str(self.revision), "annotations": {"k8s.io/initial-events-end": "true"}},
                }})  # fmt: skip
            self.watchers.append(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self.lock:
                if watcher in self.watchers:
                    self.watchers.remove(watcher)
        return response
