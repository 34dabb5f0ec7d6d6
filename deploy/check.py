"""Checks of deploy/ that the API schemas cannot make, run by deploy/validate.

    python deploy/check.py build OUT_DIR          kustomize build of the base and every overlay
    python deploy/check.py manifests OUT_DIR      the project's rules on what was built
    python deploy/check.py metrics RULES_FILE     metric names; the dashboard's queries as rules
    python deploy/check.py image OUT_DIR          Dockerfile layers and user, .dockerignore
    python deploy/check.py links -                the documents' links stay in the repository

`build` writes OUT_DIR/<name>.yaml (the API objects kubernetes-validate checks) and
OUT_DIR/<name>.crs.yaml (custom resources, whose CRDs no registry package ships) for the base
and each overlay. Every failure is printed; the exit status is 1 if there was one.
"""

import asyncio
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
failures = []


def fail(message):
    failures.append(message)


def kustomizations():
    yield "base", K8S / "base"
    for overlay in sorted((K8S / "overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            yield overlay.name, overlay


def is_custom(doc):
    group = doc["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def build(out):
    import pykustomize

    out.mkdir(parents=True, exist_ok=True)
    for name, path in kustomizations():
        # Kustomize itself: every listed file must exist and every patch apply.
        try:
            built = asyncio.run(pykustomize.build(str(path))).yaml
        except pykustomize.KustomizeError as e:
            fail(f"kustomize build {path.relative_to(ROOT)}: {e}")
            continue
        docs = [d for d in yaml.safe_load_all(built) if d]
        api = [d for d in docs if not is_custom(d)]
        crs = [d for d in docs if is_custom(d)]
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(api, sort_keys=False))
        (out / f"{name}.crs.yaml").write_text(yaml.safe_dump_all(crs, sort_keys=False))
        print(f"kustomize build {path.relative_to(ROOT)}: {len(api)} objects, {len(crs)} custom resources")
        for d in crs:
            print(f"  unchecked (no CRD schema offline): {d['apiVersion']} {d['kind']} {d['metadata']['name']}")


def settings():
    """HOLDFAST_* variables: the fields of `pub struct Config` in engine/src/config.rs."""
    source = (ROOT / "engine" / "src" / "config.rs").read_text()
    body = source.split("pub struct Config {", 1)[1].split("\n}\n", 1)[0]
    fields = re.findall(r"^\s*pub (\w+):", body, re.M)
    roles = re.search(r"pub const ROLE_NAMES: &\[&str\] = &\[(.*?)\];", source, re.S).group(1)
    return {f"HOLDFAST_{f.upper()}" for f in fields}, set(re.findall(r'"(\w+)"', roles))


def matches(selector, labels):
    if not selector:
        return False
    ok = all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
    for e in selector.get("matchExpressions") or []:
        value = labels.get(e["key"])
        if e["operator"] == "In":
            ok = ok and value in e["values"]
        elif e["operator"] == "NotIn":
            ok = ok and value not in e["values"]
        elif e["operator"] == "Exists":
            ok = ok and value is not None
    return ok


def check_manifests(out):
    variables, role_names = settings()
    example_keys = set(yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())["stringData"])
    for name, _ in kustomizations():
        docs = list(yaml.safe_load_all((out / f"{name}.yaml").read_text()))
        crs = [d for d in yaml.safe_load_all((out / f"{name}.crs.yaml").read_text()) if d]
        where = f"{name}:"
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
        pods = {n: w["spec"]["template"] for n, w in workloads.items()}
        cnpg = {d["metadata"]["name"] for d in crs if d["kind"] == "Cluster"}
        configmaps = by_kind.get("ConfigMap", {})
        for cm in configmaps.values():
            for key in cm.get("data") or {}:
                if key.startswith("HOLDFAST_") and key not in variables:
                    fail(f"{where} ConfigMap {cm['metadata']['name']} sets {key}, not a setting of engine/src/config.rs")
        served = {}
        for wname, w in workloads.items():
            tpl = w["spec"]["template"]
            spec = tpl["spec"]
            if not matches(w["spec"]["selector"], tpl["metadata"].get("labels") or {}):
                fail(f"{where} {wname}: its selector does not select its own pods")
            psc = spec.get("securityContext") or {}
            if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
                fail(f"{where} {wname}: pods must run as a non-root user (runAsNonRoot, runAsUser)")
            if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                fail(f"{where} {wname}: seccompProfile RuntimeDefault")
            if spec.get("automountServiceAccountToken") is not False:
                fail(f"{where} {wname}: Holdfast calls no Kubernetes API: automountServiceAccountToken: false")
            for c in spec["containers"]:
                csc = c.get("securityContext") or {}
                if csc.get("readOnlyRootFilesystem") is not True:
                    fail(f"{where} {wname}/{c['name']}: readOnlyRootFilesystem: true")
                if csc.get("allowPrivilegeEscalation") is not False:
                    fail(f"{where} {wname}/{c['name']}: allowPrivilegeEscalation: false")
                if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
                    fail(f"{where} {wname}/{c['name']}: capabilities drop [ALL]")
                res = c.get("resources") or {}
                if not {"cpu", "memory"} <= set(res.get("requests") or {}) or "memory" not in (res.get("limits") or {}):
                    fail(f"{where} {wname}/{c['name']}: cpu and memory requests and a memory limit")
                if "readinessProbe" not in c or "livenessProbe" not in c:
                    fail(f"{where} {wname}/{c['name']}: readiness and liveness probes")
                if name != "base" and (":" not in c["image"] or "/" not in c["image"] or c["image"].endswith(":latest")):
                    fail(f"{where} {wname}/{c['name']}: image {c['image']} is not from a registry with a tag")
                args = c.get("args") or []
                if args[:2] != ["serve", "--roles"] or len(args) != 3:
                    fail(f"{where} {wname}/{c['name']}: args must be serve --roles ROLES, not {args}")
                    continue
                roles = [r.strip() for r in args[2].split(",")]
                for r in roles:
                    if r not in role_names or r == "all":
                        fail(f"{where} {wname}: role {r!r} is not one of {sorted(role_names - {'all'})}")
                    served.setdefault(r, []).append(wname)
                if "orders" in roles and "inventory" not in roles:
                    fail(f"{where} {wname}: the orders role runs beside inventory")
                for e in c.get("env") or []:
                    if e["name"].startswith("HOLDFAST_") and e["name"] not in variables:
                        fail(f"{where} {wname}: {e['name']} is not a setting of engine/src/config.rs")
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        if ref["name"] == "holdfast":
                            if ref["key"] not in example_keys:
                                fail(f"{where} {wname}: secret key {ref['key']} is not in secret.example.yaml")
                        elif not (ref["name"].endswith("-app") and ref["name"][: -len("-app")] in cnpg):
                            fail(f"{where} {wname}: secret {ref['name']} is neither `holdfast` nor a CloudNativePG cluster's")
                for ef in c.get("envFrom") or []:
                    cm = (ef.get("configMapRef") or {}).get("name")
                    if cm and cm not in configmaps:
                        fail(f"{where} {wname}: ConfigMap {cm} is not built")
        for role in sorted(role_names - {"all"}):
            # The gateway fronts every workload whose routes the Ingress sends it.
            if role == "gateway" and not served.get(role):
                fail(f"{where} role gateway must run in a workload")
            elif role != "gateway" and len(served.get(role, [])) != 1:
                fail(f"{where} role {role} must run in exactly one workload, not {served.get(role, [])}")
        ports = {}
        for wname, tpl in pods.items():
            for c in tpl["spec"]["containers"]:
                for p in c.get("ports") or []:
                    ports.setdefault(wname, set()).add(p["name"])
        for svc in by_kind.get("Service", {}).values():
            sel = {"matchLabels": svc["spec"].get("selector")}
            targets = [n for n, t in pods.items() if matches(sel, t["metadata"].get("labels") or {})]
            if not targets:
                fail(f"{where} Service {svc['metadata']['name']} selects no pods")
            for p in svc["spec"]["ports"]:
                for t in targets:
                    if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports.get(t, set()):
                        fail(f"{where} Service {svc['metadata']['name']}: {t} has no port {p['targetPort']}")
        for pdb in by_kind.get("PodDisruptionBudget", {}).values():
            if not any(matches(pdb["spec"]["selector"], t["metadata"].get("labels") or {}) for t in pods.values()):
                fail(f"{where} PodDisruptionBudget {pdb['metadata']['name']} selects no pods")
        for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
            ref = hpa["spec"]["scaleTargetRef"]
            if ref["name"] not in by_kind.get(ref["kind"], {}):
                fail(f"{where} HPA {hpa['metadata']['name']} scales {ref['kind']} {ref['name']}, which is not built")
            kinds = {m["type"] for m in hpa["spec"]["metrics"]}
            if not {"Resource", "External"} <= kinds:
                fail(f"{where} HPA {hpa['metadata']['name']}: CPU and consumer lag")
        for ing in by_kind.get("Ingress", {}).values():
            for rule in ing["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    svc = path["backend"]["service"]
                    if svc["name"] not in by_kind.get("Service", {}):
                        fail(f"{where} Ingress {ing['metadata']['name']}: {path['path']} goes to missing Service {svc['name']}")
                    elif svc["port"].get("name") not in {p.get("name") for p in by_kind["Service"][svc["name"]]["spec"]["ports"]}:
                        fail(f"{where} Ingress: Service {svc['name']} has no port {svc['port']}")
        policies = by_kind.get("NetworkPolicy", {})
        for np in policies.values():
            sel = np["spec"]["podSelector"]
            if (sel.get("matchLabels") or {}).get("app.kubernetes.io/name") != "holdfast":
                fail(f"{where} NetworkPolicy {np['metadata']['name']} must select Holdfast's pods only")
            for rule in np["spec"].get("ingress") or []:
                for p in rule.get("ports") or []:
                    if not any(p["port"] in ports.get(n, set()) for n, t in pods.items() if matches(sel, t["metadata"].get("labels") or {})):
                        fail(f"{where} NetworkPolicy {np['metadata']['name']}: no selected pod has port {p['port']}")
        # Who reaches which port: the node API from nodes, ops from the monitoring namespace,
        # and nothing else from outside the namespace but the gateway.
        for n, tpl in pods.items():
            labels = tpl["metadata"].get("labels") or {}
            applying = [np for np in policies.values() if matches(np["spec"]["podSelector"], labels)]
            if not any(np["spec"].get("policyTypes") == ["Ingress"] and not np["spec"].get("ingress") for np in applying):
                fail(f"{where} {n}: no default-deny NetworkPolicy applies")
            for np in applying:
                for rule in np["spec"].get("ingress") or []:
                    for p in rule.get("ports") or []:
                        sources = rule.get("from") or []
                        if p["port"] == "internal" and sources != [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "node", "app.kubernetes.io/name": "holdfast"}}}]:
                            fail(f"{where} {np['metadata']['name']}: the node API only from the nodes")
                        if p["port"] == "ops" and sources != [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]:
                            fail(f"{where} {np['metadata']['name']}: the ops port only from the monitoring namespace")
                        if not sources and labels.get("app.kubernetes.io/component") != "node":
                            fail(f"{where} {np['metadata']['name']}: only the gateway is open to everyone")
        for d in crs:
            if not d.get("metadata", {}).get("name") or not isinstance(d.get("spec"), dict):
                fail(f"{where} {d['kind']}: metadata.name and spec")
        if name == "example":
            brokers = configmaps["holdfast"]["data"].get("HOLDFAST_KAFKA_BROKERS", "")
            kafkas = {d["metadata"]["name"] for d in crs if d["kind"] == "Kafka"}
            if not any(brokers.startswith(f"{k}-kafka-bootstrap:") for k in kafkas):
                fail(f"{where} HOLDFAST_KAFKA_BROKERS {brokers} is not the bootstrap Service of {kafkas}")
            exporters = [d for d in crs if d["kind"] == "Kafka" and "kafkaExporter" in d["spec"]]
            if not exporters:
                fail(f"{where} the Kafka exporter (consumer lag for alerts and HPAs) is not enabled")


def emitted():
    names = set()
    for path in ROOT.glob("**/src/**/*.rs"):
        if "target" in path.parts:
            continue
        names.update(re.findall(r'metrics::(?:counter|histogram|gauge)!\(\s*"(\w+)"', path.read_text()))
    return names


def check_metrics(rules_out):
    code = emitted()
    files = [
        ROOT / "deploy" / "prometheus" / "alerts.yaml",
        ROOT / "deploy" / "prometheus" / "alerts.test.yaml",
        ROOT / "deploy" / "grafana" / "holdfast.json",
        ROOT / "docs" / "metrics.md",
    ]
    for path in files:
        for name in set(re.findall(r"\bholdfast_[a-z_]*[a-z]\b", path.read_text())):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in code and base not in code:
                fail(f"{path.relative_to(ROOT)} names {name}, which the code does not emit")
    documented = set(re.findall(r"`(holdfast_\w+)`", (ROOT / "docs" / "metrics.md").read_text()))
    for name in sorted(code - documented):
        fail(f"docs/metrics.md does not document {name}")
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "holdfast.json").read_text())
    rules = []
    ids = set()
    for panel in dashboard["panels"]:
        if panel["id"] in ids:
            fail(f"dashboard: panel id {panel['id']} twice")
        ids.add(panel["id"])
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m")
            rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
    if not rules:
        fail("dashboard: no queries")
    Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    print(f"metrics: {len(code)} emitted, all documented; {len(rules)} dashboard queries to parse")


def check_image(out):
    """The Dockerfile's layers and user, and what the build context leaves out."""
    lines = [l.strip() for l in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]
    build = lines[next(i for i, l in enumerate(lines) if l.startswith("FROM chef AS build")):]
    cook = next((i for i, l in enumerate(build) if "cargo chef cook" in l), None)
    sources = next((i for i, l in enumerate(build) if l == "COPY . ."), None)
    if cook is None or sources is None or cook > sources:
        fail("Dockerfile: the dependencies (cargo chef cook) must build before the sources are copied")
    users = [l.split()[1] for l in lines if l.startswith("USER ")]
    if users != ["10001:10001"]:
        fail(f"Dockerfile: the image runs as 10001:10001, the pods' runAsUser (USER {users})")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target/", ".git/", "data/"):
        if entry not in ignored:
            fail(f".dockerignore: {entry} belongs out of the build context")
    for name, _ in kustomizations():
        for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()):
            spec = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
            if spec and spec["securityContext"].get("runAsUser") != 10001:
                fail(f"{name}: {d['metadata']['name']} runs as another user than the image's 10001")


def check_links(_):
    """Links of the documents naming deploy/: inside the repository, to files that exist."""
    for doc in [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            path, _, anchor = target.partition("#")
            if re.match(r"^[a-z]+:", path):
                fail(f"{doc.relative_to(ROOT)}: {target} leaves the repository")
            elif path and not (doc.parent / path).exists():
                fail(f"{doc.relative_to(ROOT)}: {target} names no file")
            elif anchor and path.endswith(".md") or (anchor and not path):
                text = (doc.parent / path).read_text() if path else doc.read_text()
                slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                         for h in re.findall(r"^#+ (.*)$", text, re.M)}
                if anchor not in slugs:
                    fail(f"{doc.relative_to(ROOT)}: {target}: no heading #{anchor}")


def main():
    command, arg = sys.argv[1], Path(sys.argv[2])
    {"build": build, "manifests": check_manifests, "metrics": check_metrics, "image": check_image, "links": check_links}[command](arg)
    for f in dict.fromkeys(failures):
        print(f"deploy/check.py: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
