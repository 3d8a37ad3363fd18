#!/usr/bin/env python3
"""Deployment tests: charts, keda/ manifests, dashboard, Dockerfiles.

Run through scripts/test-deploy.sh (it provides HELM and DEPLOY_CHECK). Every positive check has
negative cases below it that feed a broken input through the same check and assert the failure
and its message, so no check can pass vacuously.

KEDA objects are validated against the openAPIV3Schema of the served version in KEDA's CRDs
(tests/fixtures/keda/keda.sh_*.yaml, copied from KEDA v2, Apache-2.0), converted to JSON Schema the way the API server treats it
with strict field validation: objects that list properties and do not preserve unknown fields
reject unknown keys. Core objects go through deploy-check (typed k8s-openapi structs).
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "fixtures" / "keda"
HELM = os.environ.get("HELM", "helm")
DEPLOY_CHECK = os.environ.get("DEPLOY_CHECK", "deploy-check")
METRICS = ROOT / "scripts" / "deploy-tests" / "known-metrics.txt"
CHARTS = ["keda-gpu-scaler", "gpu-workload"]
NS = {"keda-gpu-scaler": "keda-gpu-scaler", "gpu-workload": "inference"}

TESTS = []


def test(name):
    def reg(fn):
        TESTS.append((name, fn))
        return fn
    return reg


def run(cmd, check=True, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def helm_template(chart, values=None, sets=(), release=None, check=True):
    cmd = [HELM, "template", release or chart, ROOT / "charts" / chart, "-n", NS[chart]]
    if values:
        cmd += ["-f", values]
    for s in sets:
        cmd += ["--set", s]
    return run(cmd, check=check)


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def find(docs, kind, name=None):
    out = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert out, f"no {kind} {name or ''} rendered"
    return out[0]


# ---------------------------------------------------------------- KEDA CRD validation

def crd_to_jsonschema(node):
    """openAPIV3Schema (structural) -> JSON Schema with the API server's field strictness."""
    if isinstance(node, list):
        return [crd_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties"):
            out[k] = {pk: crd_to_jsonschema(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = crd_to_jsonschema(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = crd_to_jsonschema(v)
        elif k.startswith("x-kubernetes-") or k in ("nullable", "format", "default", "description"):
            continue
        else:
            out[k] = v
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if node.get("format") == "int32":
        out["minimum"] = max(out.get("minimum", -2**31), -2**31)
        out["maximum"] = min(out.get("maximum", 2**31 - 1), 2**31 - 1)
    return out


# The CEL rules in the CRDs, evaluated by hand below; a new rule upstream fails the test until
# it is implemented here, instead of being skipped silently.
KNOWN_CEL = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)",
}

OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def load_crd(path):
    crd = yaml.safe_load(Path(path).read_text())
    versions = [v for v in crd["spec"]["versions"] if v.get("served")]
    version = next(v for v in versions if v.get("storage"))
    raw = version["schema"]["openAPIV3Schema"]
    cel = set()

    def walk(n):
        if isinstance(n, dict):
            for r in n.get("x-kubernetes-validations", []):
                cel.add(" ".join(r["rule"].split()))
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)
    walk(raw)
    unknown = cel - KNOWN_CEL
    assert not unknown, f"{path}: CEL rules not implemented by this test: {unknown}"
    schema = crd_to_jsonschema(raw)
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["properties"].pop("status", None)
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    schema["additionalProperties"] = False
    jsonschema.Draft7Validator.check_schema(schema)
    return crd["spec"]["names"]["kind"], jsonschema.Draft7Validator(schema)


VALIDATORS = dict(load_crd(REF / f) for f in ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"))

# Trigger metadata is checked by the scaler itself: `keda-gpu-scaler check` runs the server's
# own parser (src/spec.rs) over each ScaledObject, so there is no second key list to keep in step.
SCALER = os.environ.get("SCALER_BIN", "keda-gpu-scaler")
NUM = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def keda_errors(obj):
    """Errors of one keda.sh object: CRD schema, CRD CEL rule, then this project's rules."""
    kind = obj.get("kind")
    if kind not in VALIDATORS:
        return [f"not a KEDA kind: {kind}"]
    errs = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in VALIDATORS[kind].iter_errors(obj)]
    if errs or kind != "ScaledObject":
        return errs
    spec = obj["spec"]
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        errs.append("minReplicaCount must be less than or equal to maxReplicaCount")
    names = [t.get("name") for t in spec["triggers"]]
    if len([n for n in names if n]) != len(set(n for n in names if n)):
        errs.append(f"duplicate trigger names {names}")
    for i, t in enumerate(spec["triggers"]):
        if not t["type"].startswith("external"):
            continue
        where = f"triggers/{i}"
        md = t["metadata"]
        if not re.match(r"^[a-z0-9.-]+:[0-9]+$", md.get("scalerAddress", "")):
            errs.append(f"{where}: scalerAddress must be host:port, got {md.get('scalerAddress')!r}")
    errs += scaler_check(obj)
    mods = spec.get("advanced", {}).get("scalingModifiers")
    if mods:
        if not all(names):
            errs.append("scalingModifiers: every trigger needs a name")
        idents = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", mods.get("formula", ""))) - {
            "max", "min", "abs", "ceil", "floor", "round", "sum", "count", "avg", "float", "int"}
        missing = idents - set(names)
        if missing:
            errs.append(f"scalingModifiers.formula names unknown triggers {sorted(missing)}")
        if not NUM.match(mods.get("target", "")):
            errs.append("scalingModifiers.target must be a number")
    return errs


def scaler_check(obj):
    """Problems `keda-gpu-scaler check` finds in one ScaledObject (one line each)."""
    p = run([SCALER, "check", "-"], check=False, input=yaml.safe_dump(obj))
    if p.returncode not in (0, 1) or "keda-gpu-scaler triggers in" not in p.stdout:
        raise AssertionError(f"keda-gpu-scaler check failed to run ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return [line.split(": ", 1)[1] for line in p.stdout.splitlines() if line.startswith("-: ")]


def check_keda_docs(docs):
    errs = []
    auth_names = {d["metadata"]["name"] for d in docs if d.get("kind") == "TriggerAuthentication"}
    for d in docs:
        if d.get("apiVersion", "").startswith("keda.sh/"):
            errs += [f"{d['kind']} {d['metadata'].get('name')}: {e}" for e in keda_errors(d)]
    # A TriggerAuthentication referenced from the same file must exist in it.
    for d in docs:
        if d.get("kind") == "ScaledObject":
            for t in d["spec"]["triggers"]:
                ref = t.get("authenticationRef", {}).get("name")
                if ref and auth_names and ref not in auth_names:
                    errs.append(f"ScaledObject {d['metadata']['name']}: no TriggerAuthentication {ref}")
    return errs


def deploy_check(path, metrics=True):
    cmd = [DEPLOY_CHECK, "k8s"] + (["--metrics", METRICS] if metrics else []) + [path]
    return run(cmd, check=False)


def check_rendered_text(text, label):
    """All checks on one rendered manifest set: typed core objects + KEDA schema + rules."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        p = deploy_check(f.name)
        assert p.returncode == 0, f"{label}: deploy-check failed:\n{p.stderr}"
    finally:
        os.unlink(f.name)
    errs = check_keda_docs(docs_of(text))
    assert not errs, f"{label}: KEDA validation failed:\n" + "\n".join(errs)


# ---------------------------------------------------------------- charts: lint and render

def values_sets(chart):
    return sorted((ROOT / "charts" / chart / "ci").glob("*-values.yaml"))


for _chart in CHARTS:
    for _v in values_sets(_chart):
        def _lint(chart=_chart, v=_v):
            run([HELM, "lint", "--strict", ROOT / "charts" / chart, "-f", v, "-n", NS[chart]])

        def _render(chart=_chart, v=_v):
            check_rendered_text(helm_template(chart, v).stdout, f"{chart} {v.name}")
        test(f"helm lint {_chart} {_v.name}")(_lint)
        test(f"helm template + validate {_chart} {_v.name}")(_render)


def container(doc, name=None):
    cs = doc["spec"]["template"]["spec"]["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


@test("scaler defaults: 2 replicas, gRPC probes on grpc.health.v1, Service 9443->grpc and 8080, hardened pod")
def _():
    docs = docs_of(helm_template("keda-gpu-scaler").stdout)
    dep = find(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    c = container(dep)
    assert c["args"] == ["serve"]
    assert c["livenessProbe"]["grpc"] == {"port": 6000, "service": ""}
    assert c["readinessProbe"]["grpc"] == {"port": 6000, "service": "externalscaler.ExternalScaler"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault" and pod["securityContext"]["runAsNonRoot"]
    # The token is mounted for service discovery (EndpointSlices); see the RBAC test.
    assert pod["automountServiceAccountToken"] is True
    svc = find(docs, "Service", "keda-gpu-scaler")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"grpc": (9443, "grpc"), "metrics": (8080, "http")}, ports
    cm = find(docs, "ConfigMap", "keda-gpu-scaler")["data"]
    assert cm["KEDA_GPU_SCALER_GRPC_ADDR"] == "0.0.0.0:6000" and cm["KEDA_GPU_SCALER_SAMPLE_INTERVAL"] == "2s"
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "Certificate", "DaemonSet"}, kinds


@test("scaler mTLS: Secret volume (no subPath), TLS env vars, HTTP probes, Certificate SANs, NetworkPolicy")
def _():
    docs = docs_of(helm_template("keda-gpu-scaler", ROOT / "charts/keda-gpu-scaler/ci/full-mtls-values.yaml").stdout)
    for kind in ("Deployment", "DaemonSet"):
        w = find(docs, kind)
        c = container(w)
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env["KEDA_GPU_SCALER_TLS__CERT_FILE"] == "/etc/keda-gpu-scaler/tls/tls.crt"
        assert env["KEDA_GPU_SCALER_TLS__KEY_FILE"] == "/etc/keda-gpu-scaler/tls/tls.key"
        assert env["KEDA_GPU_SCALER_TLS__CLIENT_CA_FILE"] == "/etc/keda-gpu-scaler/tls/ca.crt"
        mounts = c["volumeMounts"]
        assert all("subPath" not in m for m in mounts), "cert rotation needs a whole-Secret mount"
        vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        assert vols["tls"]["secret"]["secretName"] == "keda-gpu-scaler-tls"
        # Kubelet's gRPC probe cannot speak TLS.
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ds = find(docs, "DaemonSet")
    assert ds["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert "nvidia.com/gpu" not in container(ds)["resources"].get("limits", {}), "DaemonSet must not take a GPU"
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in container(ds)["env"]
    cert = find(docs, "Certificate")
    assert "keda-gpu-scaler.keda-gpu-scaler.svc.cluster.local" in cert["spec"]["dnsNames"]
    assert cert["spec"]["secretName"] == "keda-gpu-scaler-tls"
    np_ = find(docs, "NetworkPolicy")
    grpc_rule = np_["spec"]["ingress"][0]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert grpc_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
    assert grpc_rule["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "keda-operator"}
    rule = find(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"KedaGpuScalerUnreachable", "KedaGpuScalerStaleSignals", "KedaGpuScalerPinnedAtMax"} <= alerts
    dash = find(docs, "ConfigMap", "keda-gpu-scaler-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "charts/keda-gpu-scaler/dashboards/keda-gpu-scaler.json").read_text())
    assert json.loads(dash["data"]["keda-gpu-scaler.json"]) == shipped


@test("scaler: config change rolls the pods (checksum/config annotation)")
def _():
    def checksum(*sets):
        dep = find(docs_of(helm_template("keda-gpu-scaler", sets=sets).stdout), "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    base = checksum()
    assert checksum() == base, "checksum must be stable"
    assert checksum("config.logLevel=debug") != base


@test("scaler: tls.enabled without a Secret or cert-manager fails with a clear message")
def _():
    p = helm_template("keda-gpu-scaler", sets=["tls.enabled=true"], check=False)
    assert p.returncode != 0
    assert "tls.secretName is required when tls.enabled=true" in p.stderr, p.stderr
    p = helm_template("keda-gpu-scaler", sets=["tls.enabled=true", "tls.certManager.enabled=true"], check=False)
    assert p.returncode != 0 and "tls.certManager.issuerRef.name is required" in p.stderr, p.stderr


@test("scaler NOTES print the scalerAddress and a grpcurl health check")
def _():
    def notes(*sets):
        cmd = [HELM, "install", "keda-gpu-scaler", ROOT / "charts/keda-gpu-scaler", "-n", "keda-gpu-scaler",
               "--dry-run=client"]
        for s in sets:
            cmd += ["--set", s]
        out = run(cmd).stdout
        return out[out.index("NOTES:"):]
    plain = notes()
    assert "scalerAddress: keda-gpu-scaler.keda-gpu-scaler.svc.cluster.local:9443" in plain, plain
    assert "grpcurl -plaintext" in plain and "grpc.health.v1.Health/Check" in plain
    tls = notes("tls.enabled=true", "tls.clientAuth=true", "tls.secretName=s")
    assert "grpcurl -cacert ca.crt" in tls and "-cert client.crt -key client.key" in tls, tls
    assert "authenticationRef" in tls


@test("workload: GPU limit, probes, no replicas field under KEDA, ScaledObject wired to the scaler")
def _():
    docs = docs_of(helm_template("gpu-workload", ROOT / "charts/gpu-workload/ci/scaledobject-values.yaml").stdout)
    dep = find(docs, "Deployment")
    assert "replicas" not in dep["spec"], "the HPA owns replicas; helm upgrade must not reset them"
    c = container(dep)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["args"][:4] == ["--addr", "0.0.0.0:8000", "--backend", "auto"]
    so = find(docs, "ScaledObject")
    t = so["spec"]["triggers"][0]
    assert t["type"] == "external" and t["metricType"] == "AverageValue"
    md = t["metadata"]
    assert md["scalerAddress"] == "keda-gpu-scaler.keda-gpu-scaler.svc.cluster.local:9443"
    assert md["namespace"] == "inference" and md["deployment"] == "gpu-workload" and md["maxReplicas"] == "8"
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] == 1, "the pods' own metrics cannot wake a workload at 0"
    push = find(docs_of(helm_template("gpu-workload", ROOT / "charts/gpu-workload/ci/push-tls-cpu-values.yaml").stdout), "ScaledObject")
    pmd = push["spec"]["triggers"][0]["metadata"]
    assert (pmd["source"], pmd["service"], pmd["port"], pmd["preset"]) == ("scrape", "gpu-workload", "http", "gpu-workload"), pmd
    assert "endpoints" not in pmd
    plain = docs_of(helm_template("gpu-workload").stdout)
    assert find(plain, "Deployment")["spec"]["replicas"] == 1
    assert find(plain, "Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


# ---------------------------------------------------------------- values.schema.json negatives

SCHEMA_CASES = [
    ("keda-gpu-scaler", ["replicaCount=two"], "at '/replicaCount': got string, want integer"),
    ("keda-gpu-scaler", ["replicaCuont=2"], "additional properties 'replicaCuont' not allowed"),
    ("keda-gpu-scaler", ["config.logFormat=yaml"], "at '/config/logFormat'"),
    ("keda-gpu-scaler", ["config.sampleInterval=2"], "at '/config/sampleInterval': got number, want string"),
    ("keda-gpu-scaler", ["config.maxStaleness=1 minute"], "at '/config/maxStaleness'"),
    # The scaler's duration parser takes one unit; a Go-style compound duration must fail at install.
    ("keda-gpu-scaler", ["config.sampleInterval=1m30s"], "at '/config/sampleInterval'"),
    ("keda-gpu-scaler", ["config.prometheusTimeout=2 s"], "at '/config/prometheusTimeout'"),
    ("keda-gpu-scaler", ["config.prometheusAddress=prometheus:9090"], "at '/config/prometheusAddress'"),
    ("keda-gpu-scaler", ["service.grpcPort=70000"], "at '/service/grpcPort'"),
    ("keda-gpu-scaler", ["tls.clientAuth=true"], "at '/tls/enabled': value must be true"),
    ("keda-gpu-scaler", ["tls.certManager.issuerRef.kind=Issuers"], "at '/tls/certManager/issuerRef/kind'"),
    ("keda-gpu-scaler", ["probes.liveness.httpGet.port=1"], "additional properties 'httpGet' not allowed"),
    ("keda-gpu-scaler", ["serviceMonitor.interval=15"], "at '/serviceMonitor/interval'"),
    ("keda-gpu-scaler", ["podDisruptionBudget.minAvailable=half"], "at '/podDisruptionBudget/minAvailable'"),
    ("keda-gpu-scaler", ["image.digest=latest"], "at '/image/digest'"),
    ("keda-gpu-scaler", ["discovery.namespaces={Team_A}"], "at '/discovery/namespaces/0'"),
    ("gpu-workload", ["backend=rocm"], "at '/backend': value must be one of 'auto', 'cuda', 'cpu'"),
    ("gpu-workload", ["gpu.count=-1"], "at '/gpu/count'"),
    ("gpu-workload", ["resources.limits.nvidia\\.com/gpu=1"], "at '/resources/limits': 'not' failed"),
    ("gpu-workload", ["scaledObject.triggerType=push"], "value must be one of 'external', 'external-push'"),
    ("gpu-workload", ["scaledObject.metadata.queueTarget=4"], "at '/scaledObject/metadata/queueTarget': got number, want string"),
    ("gpu-workload", ["scaledObject.metadata.source=dcgm"], "at '/scaledObject/metadata/source'"),
    ("gpu-workload", ["scaledObject.scaler.address=keda-gpu-scaler"], "at '/scaledObject/scaler/address'"),
]

for _chart, _sets, _msg in SCHEMA_CASES:
    def _schema_case(chart=_chart, sets=_sets, msg=_msg):
        p = helm_template(chart, sets=sets, check=False)
        assert p.returncode != 0, f"--set {sets} was accepted"
        assert "values don't meet the specifications of the schema" in p.stderr, p.stderr
        assert msg in p.stderr, f"expected {msg!r} in:\n{p.stderr}"
    test(f"values.schema.json rejects {_chart} --set {' '.join(_sets)}")(_schema_case)


# ---------------------------------------------------------------- keda/ manifests

for _f in sorted((ROOT / "keda").glob("*.yaml")):
    def _keda_file(f=_f):
        check_rendered_text(f.read_text(), f.name)
    test(f"keda/{_f.name}: typed decode + KEDA CRD schema + scaler contract")(_keda_file)


@test("keda-gpu-scaler check: every keda/*.yaml passes, each ScaledObject example has a trigger, a typo fails naming the key")
def _():
    files = sorted((ROOT / "keda").glob("*.yaml"))
    p = run([SCALER, "check"] + files, check=False)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    examples = [f for f in files if "kind: ScaledObject" in f.read_text()]
    m = re.search(r"checked (\d+) keda-gpu-scaler triggers in (\d+) files: 0 problems", p.stdout)
    assert m and int(m.group(1)) >= len(examples) >= 7 and int(m.group(2)) == len(files), p.stdout
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write((ROOT / "keda" / "scaledobject-vllm.yaml").read_text().replace("attainment:", "attainmnet:"))
    try:
        p = run([SCALER, "check", f.name], check=False)
    finally:
        os.unlink(f.name)
    assert p.returncode == 1, p.stdout
    assert "attainmnet: unknown key; did you mean 'attainment'?" in p.stdout, p.stdout
    assert "1 problems" in p.stdout or "problems" in p.stdout, p.stdout


@test("scaler RBAC: list/watch endpointslices only; ClusterRole by default, a Role per namespace when restricted, none when off")
def _():
    verbs = [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]
    docs = docs_of(helm_template("keda-gpu-scaler").stdout)
    cr = find(docs, "ClusterRole")
    assert cr["rules"] == verbs, cr["rules"]
    crb = find(docs, "ClusterRoleBinding")
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "keda-gpu-scaler", "namespace": "keda-gpu-scaler"}]
    assert find(docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert find(docs, "ConfigMap")["data"]["KEDA_GPU_SCALER_KUBERNETES__NAMESPACES"] == ""
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]

    docs = docs_of(helm_template("keda-gpu-scaler", ROOT / "charts/keda-gpu-scaler/ci/discovery-namespaces-values.yaml").stdout)
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    assert set(roles) == {"inference", "team-a"} and all(r["rules"] == verbs for r in roles.values())
    bindings = {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"}
    assert bindings == {"inference", "team-a"}
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    assert find(docs, "ConfigMap")["data"]["KEDA_GPU_SCALER_KUBERNETES__NAMESPACES"] == "inference,team-a"

    docs = docs_of(helm_template("keda-gpu-scaler", sets=["discovery.enabled=false"]).stdout)
    assert not [d for d in docs if "Role" in d["kind"]]
    assert find(docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@test("scaler RBAC: podDeletionCost.enabled adds patch on pods, nothing else, where discovery reads")
def _():
    verbs = [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
    ]
    docs = docs_of(helm_template("keda-gpu-scaler", sets=["podDeletionCost.enabled=true"]).stdout)
    assert find(docs, "ClusterRole")["rules"] == verbs, find(docs, "ClusterRole")["rules"]
    docs = docs_of(helm_template("keda-gpu-scaler", ROOT / "charts/keda-gpu-scaler/ci/discovery-namespaces-values.yaml",
                                 sets=["podDeletionCost.enabled=true"]).stdout)
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    assert set(roles) == {"inference", "team-a"} and all(r["rules"] == verbs for r in roles.values())


@test("scaler RBAC: podReadinessGate.enabled adds list, watch and patch on pods and patch on pods/status")
def _():
    verbs = [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    ]
    for sets in (["podReadinessGate.enabled=true"],
                 ["podReadinessGate.enabled=true", "podDeletionCost.enabled=true"]):
        docs = docs_of(helm_template("keda-gpu-scaler", sets=sets).stdout)
        assert find(docs, "ClusterRole")["rules"] == verbs, find(docs, "ClusterRole")["rules"]
    docs = docs_of(helm_template("keda-gpu-scaler", ROOT / "charts/keda-gpu-scaler/ci/discovery-namespaces-values.yaml",
                                 sets=["podReadinessGate.enabled=true"]).stdout)
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    assert set(roles) == {"inference", "team-a"} and all(r["rules"] == verbs for r in roles.values())


@test("deploy-check rejects a RoleBinding to a Role that is not rendered")
def _():
    text = helm_template("keda-gpu-scaler", ROOT / "charts/keda-gpu-scaler/ci/discovery-namespaces-values.yaml").stdout
    docs = [d for d in docs_of(text) if not (d["kind"] == "Role" and d["metadata"]["namespace"] == "team-a")]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(yaml.safe_dump_all(docs))
    try:
        p = deploy_check(f.name)
    finally:
        os.unlink(f.name)
    assert p.returncode != 0 and "roleRef Role keda-gpu-scaler-endpointslices is not rendered in namespace team-a" in p.stderr, p.stderr


def keda_doc(name, kind="ScaledObject"):
    return next(d for d in docs_of((ROOT / "keda" / name).read_text()) if d["kind"] == kind)


def mutate(doc, fn):
    d = copy.deepcopy(doc)
    fn(d)
    return d


SO = "scaledobject-fallback-behavior.yaml"
KEDA_NEGATIVE = [
    ("unknown spec field", SO, lambda d: d["spec"].update(minReplicas=1), "Additional properties are not allowed ('minReplicas'"),
    ("unknown trigger field", SO, lambda d: d["spec"]["triggers"][0].update(metricsType="AverageValue"), "'metricsType' was unexpected"),
    ("typo under advanced", SO, lambda d: d["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(stabilizationWindow=60), "'stabilizationWindow' was unexpected"),
    ("wrong type", SO, lambda d: d["spec"].update(pollingInterval="15"), "spec/pollingInterval: '15' is not of type 'integer'"),
    ("int32 overflow", SO, lambda d: d["spec"].update(maxReplicaCount=2**31), "spec/maxReplicaCount"),
    ("metadata value not a string", SO, lambda d: d["spec"]["triggers"][0]["metadata"].update(queueTarget=4), "queueTarget: 4 is not of type 'string'"),
    ("fallback without replicas", SO, lambda d: d["spec"]["fallback"].pop("replicas"), "'replicas' is a required property"),
    ("fallback behavior enum", SO, lambda d: d["spec"]["fallback"].update(behavior="current"), "spec/fallback/behavior: 'current' is not one of"),
    ("no triggers", SO, lambda d: d["spec"].update(triggers=[]), "spec/triggers: [] should be non-empty"),
    ("CEL min <= max", SO, lambda d: d["spec"].update(minReplicaCount=20), "minReplicaCount must be less than or equal to maxReplicaCount"),
    ("unknown metadata field", SO, lambda d: d["metadata"].update(label={"a": "b"}), "'label' was unexpected"),
    ("metricType Value", SO, lambda d: d["spec"]["triggers"][0].update(metricType="Value"), "metricType: 'Value' is not accepted"),
    ("unknown scaler key", SO, lambda d: d["spec"]["triggers"][0]["metadata"].update(queueTargt="4"), "queueTargt: unknown key; did you mean 'queueTarget'?"),
    ("non-numeric target", SO, lambda d: d["spec"]["triggers"][0]["metadata"].update(queueTarget="four"), "queueTarget: 'four' is not accepted"),
    ("unknown preset", SO, lambda d: d["spec"]["triggers"][0]["metadata"].update(preset="ollama"), "preset: 'ollama' is not accepted; expected vllm, sglang, tgi, triton or gpu-workload"),
    ("scalerAddress without port", SO, lambda d: d["spec"]["triggers"][0]["metadata"].update(scalerAddress="keda-gpu-scaler"), "scalerAddress must be host:port"),
    ("scrape without endpoints", "scaledobject-external-push.yaml", lambda d: d["spec"]["triggers"][0]["metadata"].pop("endpoints"), "endpoints: required with source=scrape"),
    ("service scrape from zero", "scaledobject-vllm.yaml", lambda d: d["spec"].update(minReplicaCount=0), "minReplicaCount: is 0 (KEDA's default) but the trigger scrapes the Service's own pods"),
    ("formula names a missing trigger", "scaledobject-scaling-modifiers.yaml", lambda d: d["spec"]["advanced"]["scalingModifiers"].update(formula="max(gpu, office_hours)"), "formula names unknown triggers ['office_hours']"),
    ("scalingModifiers unnamed trigger", "scaledobject-scaling-modifiers.yaml", lambda d: d["spec"]["triggers"][1].pop("name"), "every trigger needs a name"),
]

for _label, _file, _fn, _msg in KEDA_NEGATIVE:
    def _keda_neg(file=_file, fn=_fn, msg=_msg):
        errs = keda_errors(mutate(keda_doc(file), fn))
        assert errs, "mutation was accepted"
        assert any(msg in e for e in errs), f"expected {msg!r} in {errs}"
    test(f"KEDA validation rejects ScaledObject: {_label}")(_keda_neg)


@test("KEDA validation rejects TriggerAuthentication with a misspelt secretTargetRef field")
def _():
    ta = keda_doc("triggerauthentication-tls.yaml", "TriggerAuthentication")
    assert keda_errors(ta) == []
    bad = mutate(ta, lambda d: d["spec"]["secretTargetRef"][0].update(paramter="caCert"))
    errs = keda_errors(bad)
    assert any("'paramter' was unexpected" in e for e in errs), errs
    bad = mutate(ta, lambda d: d["spec"].update(secretTargetRefs=[]))
    assert any("'secretTargetRefs' was unexpected" in e for e in keda_errors(bad))


@test("KEDA validation rejects an authenticationRef to a TriggerAuthentication that is not there")
def _():
    docs = docs_of((ROOT / "keda/triggerauthentication-tls.yaml").read_text()) + [keda_doc("scaledobject-tls.yaml")]
    assert check_keda_docs(docs) == []
    docs[-1]["spec"]["triggers"][0]["authenticationRef"]["name"] = "keda-gpu-scaler-mtls"
    assert any("no TriggerAuthentication keda-gpu-scaler-mtls" in e for e in check_keda_docs(docs))


# ---------------------------------------------------------------- deploy-check negatives

def rendered(chart="keda-gpu-scaler", values=None):
    return helm_template(chart, values).stdout


def replace_once(text, old, new):
    assert old in text, f"{old!r} not in rendered output"
    return text.replace(old, new, 1)


K8S_NEGATIVE = [
    ("misspelt probe field", lambda t: replace_once(t, "readinessProbe:", "readinesProbe:"), "unknown field(s): spec.template.spec.containers.0.readinesProbe"),
    ("field nested one level too deep", lambda t: replace_once(t, "              service: \"\"\n            failureThreshold: 6\n", "              service: \"\"\n              failureThreshold: 6\n"), "unknown field(s): spec.template.spec.containers.0.livenessProbe.grpc.failureThreshold"),
    ("wrong type", lambda t: replace_once(t, "replicas: 2", "replicas: two"), "invalid type: string \"two\", expected i32"),
    ("wrong apiVersion", lambda t: replace_once(t, "apiVersion: policy/v1", "apiVersion: policy/v1beta1"), "no typed check for apiVersion \"policy/v1beta1\""),
    ("Service targets a missing port name", lambda t: replace_once(t, "targetPort: grpc", "targetPort: grcp"), "named port \"grcp\" is not a container port"),
    ("Service selector matches no pods", lambda t: replace_once(t, "  selector:\n    app.kubernetes.io/name: keda-gpu-scaler", "  selector:\n    app.kubernetes.io/name: keda-gpu-scalr"), "matches no pod template"),
    ("probe on an undeclared port", lambda t: replace_once(t, "port: 6000\n              # \"\"", "port: 6001\n              # \"\""), "port 6001 is not a container port"),
    ("writable root filesystem", lambda t: replace_once(t, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"), "readOnlyRootFilesystem must be true"),
    ("privilege escalation", lambda t: replace_once(t, "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"), "allowPrivilegeEscalation must be false"),
    ("no seccomp profile", lambda t: replace_once(t, "          type: RuntimeDefault\n", "          type: Unconfined\n"), "seccompProfile must be RuntimeDefault"),
    ("PDB with both bounds", lambda t: replace_once(t, "  maxUnavailable: 1\n", "  maxUnavailable: 1\n  minAvailable: 1\n"), "set exactly one of minAvailable/maxUnavailable"),
    ("invalid object name", lambda t: replace_once(t, "name: keda-gpu-scaler\n  namespace", "name: KEDA_gpu\n  namespace"), "invalid name \"KEDA_gpu\""),
]

for _label, _fn, _msg in K8S_NEGATIVE:
    def _k8s_neg(fn=_fn, msg=_msg):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(fn(rendered()))
        try:
            p = deploy_check(f.name)
        finally:
            os.unlink(f.name)
        assert p.returncode != 0, "deploy-check accepted the broken manifest"
        assert msg in p.stderr, f"expected {msg!r} in:\n{p.stderr}"
    test(f"deploy-check rejects rendered scaler chart: {_label}")(_k8s_neg)


@test("deploy-check rejects a GPU request without an equal limit, and a ServiceMonitor on a missing port")
def _():
    text = rendered("gpu-workload", ROOT / "charts/gpu-workload/ci/scaledobject-values.yaml")
    bad = replace_once(text, "            requests:\n", "            requests:\n              nvidia.com/gpu: 2\n")
    bad = replace_once(bad, "    - port: http\n      path: /metrics", "    - port: metrics\n      path: /metrics")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(bad)
    try:
        p = deploy_check(f.name)
    finally:
        os.unlink(f.name)
    assert p.returncode != 0
    assert "extended resource nvidia.com/gpu request needs an equal limit" in p.stderr, p.stderr
    assert "has no port named \"metrics\"" in p.stderr, p.stderr


@test("deploy-check rejects PrometheusRule with broken PromQL, an unknown metric or a bad duration")
def _():
    text = rendered("keda-gpu-scaler", ROOT / "charts/keda-gpu-scaler/ci/full-mtls-values.yaml")
    for old, new, msg in [
        # "{job=" only occurs in the PrometheusRule, not in the dashboard ConfigMap.
        ("(keda_gpu_scaler_stale{job=", "(keda_gpu_scaler_stale{{job=", "PromQL does not parse"),
        ("(keda_gpu_scaler_stale{job=", "(keda_gpu_scaler_stail{job=", "reads metric(s) nobody exports: [\"keda_gpu_scaler_stail\"]"),
        ("for: 30m", "for: 30 minutes", "is not a Prometheus duration"),
        ("          labels:\n            severity", "          label:\n            severity", "unknown field `label`"),
    ]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(replace_once(text, old, new))
        try:
            p = deploy_check(f.name)
        finally:
            os.unlink(f.name)
        assert p.returncode != 0, f"accepted {new!r}"
        assert msg in p.stderr, f"expected {msg!r} in:\n{p.stderr}"


@test("deploy-check rejects unparsable PromQL in a ScaledObject query override")
def _():
    text = (ROOT / "keda/scaledobject-external-prometheus.yaml").read_text()
    # An override (allowed where the operator allows custom queries) with a missing ')'.
    bad = replace_once(text, "        deployment: llm-server", '        deployment: llm-server\n        gpuUtilQuery: avg(DCGM_FI_DEV_GPU_UTIL{namespace="inference"}')
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(bad)
    try:
        p = deploy_check(f.name)
    finally:
        os.unlink(f.name)
    assert p.returncode != 0 and "trigger metadata gpuUtilQuery: PromQL does not parse" in p.stderr, p.stderr


@test("deploy-check unit tests (cargo test -p deploy-check)")
def _():
    p = run(["cargo", "test", "--quiet", "--locked", "-p", "deploy-check"], cwd=ROOT)
    assert re.search(r"test result: ok\. [1-9][0-9]* passed", p.stdout), p.stdout


# ---------------------------------------------------------------- Grafana dashboard

DASHBOARD = ROOT / "charts/keda-gpu-scaler/dashboards/keda-gpu-scaler.json"


@test("dashboard: every PromQL parses and reads only exported metrics; required panels present")
def _():
    p = run([DEPLOY_CHECK, "promql", "--metrics", METRICS, DASHBOARD])
    assert "ok:" in p.stdout
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p_ in dash["panels"] for t in p_.get("targets", []))
    for metric in ("keda_gpu_scaler_desired_replicas", "keda_gpu_scaler_signal_demand_replicas",
                   "keda_gpu_scaler_active", "keda_gpu_scaler_stale", "keda_gpu_scaler_sample_age_seconds",
                   'signal="latency"', 'signal="gpu_util"', "kube_horizontalpodautoscaler_status_current_replicas"):
        assert metric in exprs, f"dashboard lacks {metric}"
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource", "namespace", "scaledobject"}


@test("ServiceMonitor keeps the scaler's labels; alerts and dashboard queries evaluated by promtool on relabelled series")
def _():
    """The scaler runs in its own namespace and exports `namespace` = the workload's. With the
    ServiceMonitor's honorLabels, Prometheus stores that label as exported; the alerts and the
    dashboard must then group by the workload's namespace. promtool evaluates the rendered rules
    and the dashboard's queries on series labelled as Prometheus stores them."""
    import shutil
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian's prometheus package ships it)"
    docs = docs_of(helm_template("keda-gpu-scaler", sets=["serviceMonitor.enabled=true", "prometheusRule.enabled=true"]).stdout)
    sm = find(docs, "ServiceMonitor")
    assert all(e.get("honorLabels") is True for e in sm["spec"]["endpoints"]), sm["spec"]["endpoints"]
    rule = find(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    pinned = next(r for g in groups for r in g["rules"] if r.get("alert") == "KedaGpuScalerPinnedAtMax")
    missed = next(r for g in groups for r in g["rules"] if r.get("alert") == "KedaGpuScalerObjectiveMissed")
    job = re.search(r'job="([^"]+)"', pinned["expr"]).group(1)
    scaler_ns = NS["keda-gpu-scaler"]
    # As stored with honorLabels: the target's namespace label lost to the scaler's own.
    target = f'job="{job}", pod="{job}-5d8f7-aaaaa", instance="10.0.0.9:8080"'
    so = 'namespace="inference", scaledobject="llm", metric="gpu-composite"'
    dash = json.loads(DASHBOARD.read_text())
    desired_expr = next(t["expr"] for p_ in dash["panels"] for t in p_.get("targets", [])
                        if t["expr"].startswith("max by (namespace, scaledobject) (keda_gpu_scaler_desired_replicas"))
    expand = lambda e: e.replace("$namespace", "inference").replace("$scaledobject", "llm").replace("$job", job)
    with tempfile.TemporaryDirectory() as d:
        rules = Path(d) / "rules.yaml"
        rules.write_text(json.dumps({"groups": groups}))
        tests = Path(d) / "test.yaml"
        tests.write_text(json.dumps({
            "rule_files": [str(rules)],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": [
                    {"series": f"keda_gpu_scaler_desired_replicas{{{target}, {so}}}", "values": "40x150"},
                    {"series": f"keda_gpu_scaler_max_replicas{{{target}, {so}}}", "values": "40x150"},
                    {"series": f'up{{{target}, namespace="{scaler_ns}"}}', "values": "1x150"},
                    {"series": f'keda_gpu_scaler_objective_attainment_ratio{{{target}, {so}, stage="asked"}}', "values": "0.95x150"},
                    {"series": f'keda_gpu_scaler_objective_attainment_ratio{{{target}, {so}, stage="hour"}}', "values": "0.9x150"},
                ],
                "alert_rule_test": [{
                    "eval_time": "140m",
                    "alertname": "KedaGpuScalerObjectiveMissed",
                    "exp_alerts": [{
                        "exp_labels": {"severity": missed["labels"]["severity"], "namespace": "inference", "scaledobject": "llm"},
                        "exp_annotations": {k: v.replace("{{ $labels.namespace }}", "inference").replace("{{ $labels.scaledobject }}", "llm").replace("{{ $value | humanizePercentage }}", "90%")
                                            for k, v in missed["annotations"].items()},
                    }],
                }, {
                    "eval_time": "140m",
                    "alertname": "KedaGpuScalerPinnedAtMax",
                    "exp_alerts": [{
                        "exp_labels": {"severity": pinned["labels"]["severity"], "namespace": "inference", "scaledobject": "llm"},
                        "exp_annotations": {k: v.replace("{{ $labels.namespace }}", "inference").replace("{{ $labels.scaledobject }}", "llm")
                                            for k, v in pinned["annotations"].items()},
                    }],
                }],
                "promql_expr_test": [{
                    "expr": expand(desired_expr),
                    "eval_time": "10m",
                    "exp_samples": [{"labels": '{namespace="inference", scaledobject="llm"}', "value": 40}],
                }],
            }],
        }))
        p = run([promtool, "test", "rules", tests], check=False)
        assert p.returncode == 0, f"promtool test rules failed:\n{p.stdout}\n{p.stderr}"


@test("dashboard check rejects a misspelt metric, broken PromQL and duplicate panel ids")
def _():
    dash = json.loads(DASHBOARD.read_text())
    cases = []
    d = copy.deepcopy(dash)
    d["panels"][2]["targets"][0]["expr"] = d["panels"][2]["targets"][0]["expr"].replace("keda_gpu_scaler_active", "keda_gpu_scaler_activ")
    cases.append((d, "nobody exports: [\"keda_gpu_scaler_activ\"]"))
    d = copy.deepcopy(dash)
    d["panels"][2]["targets"][0]["expr"] += ")"
    cases.append((d, "PromQL does not parse"))
    d = copy.deepcopy(dash)
    d["panels"][3]["id"] = d["panels"][2]["id"]
    cases.append((d, "duplicate panel id"))
    for bad, msg in cases:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(bad, f)
        try:
            p = run([DEPLOY_CHECK, "promql", "--metrics", METRICS, f.name], check=False)
        finally:
            os.unlink(f.name)
        assert p.returncode != 0 and msg in p.stderr, f"expected {msg!r}:\n{p.stderr}"


# ---------------------------------------------------------------- Dockerfiles

DOCKERFILES = sorted((ROOT / "deploy/docker").glob("*.Dockerfile"))


def dockerfile_errors(text):
    """Multi-stage, numeric non-root USER in the final stage, exec-form ENTRYPOINT, --locked build."""
    errs = []
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        errs.append("not multi-stage")
    final = lines[froms[-1]:] if froms else lines
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    if not users or not re.match(r"^[1-9][0-9]*(:[1-9][0-9]*)?$", users[-1]):
        errs.append("final stage must end with a numeric non-root USER")
    eps = [l for l in final if l.upper().startswith("ENTRYPOINT ")]
    if not eps or not eps[-1].split(None, 1)[1].startswith("["):
        errs.append("ENTRYPOINT must be exec form")
    if "--locked" not in text:
        errs.append("cargo build must use --locked")
    return errs


def cargo_targets():
    meta = json.loads(run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT).stdout)
    return {(p["name"], t["name"]) for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}


for _df in DOCKERFILES:
    def _docker(df=_df):
        text = df.read_text()
        run(["hadolint", "--failure-threshold", "warning", df])
        errs = dockerfile_errors(text)
        assert not errs, errs
        m = re.search(r"cargo build .*-p (\S+) --bin (\S+)", text)
        assert m, "no cargo build -p PKG --bin BIN"
        pkg, binary = m.groups()
        targets = cargo_targets()
        if any(p == pkg for p, _ in targets):
            assert (pkg, binary) in targets, f"{pkg} has no binary {binary}: {sorted(targets)}"
        else:
            print(f"    note: package {pkg} not in this workspace yet; binary name not checked", file=sys.stderr)
        assert f"/{binary}" in text.split("FROM")[-1], "final stage does not copy the built binary"
    test(f"Dockerfile {_df.name}: hadolint, multi-stage, non-root, builds a real binary")(_docker)


@test("Dockerfile checks reject a single-stage root image and hadolint flags :latest")
def _():
    bad = "FROM rust:latest\nCOPY . .\nRUN cargo build --release\nENTRYPOINT /app\n"
    errs = dockerfile_errors(bad)
    for msg in ("not multi-stage", "numeric non-root USER", "exec form", "--locked"):
        assert any(msg in e for e in errs), (msg, errs)
    with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile", delete=False) as f:
        f.write(bad)
    try:
        p = run(["hadolint", "--failure-threshold", "warning", f.name], check=False)
    finally:
        os.unlink(f.name)
    assert p.returncode != 0 and "DL3007" in p.stdout, p.stdout


# ---------------------------------------------------------------- runner

def main():
    only = sys.argv[1] if len(sys.argv) > 1 else None
    passed = failed = 0
    for name, fn in TESTS:
        if only and only not in name:
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {name}\n    " + (str(e) or traceback.format_exc()).replace("\n", "\n    "))
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
