"""deploy/k8s checked without a cluster.

Every manifest is read into the Kubernetes client's model of its kind and written back: the client
drops fields its model does not know and converts values to the declared types, so a misspelt or
misplaced field, or a number where Kubernetes wants a string, shows up as a difference. Then each
fact the manifests repeat from the code is compared with the code: the dataflow's process index and
count, where dedup keeps its ids, the API's probe paths, the TALLY_* names, the stores' hosts every
process that talks to a store is given, the quality report's shared volume, and the Job that
dagster-k8s would launch for a run with our Helm values.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_job_name_from_run_id,
    get_user_defined_k8s_config,
)
from kubernetes import client

import dataflows.flow
from tally.api.app import create_app
from tally.settings import REPO_ROOT, Settings

K8S = REPO_ROOT / "deploy" / "k8s"
VALUES = yaml.safe_load((K8S / "dagster" / "values.yaml").read_text())
WORKSPACE = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
# Not API objects: kustomize's own file and the Helm chart's values (checked on their own below).
NOT_API_OBJECTS = {"kustomization.yaml", "values.yaml"}
SETTING_NAMES = {f"TALLY_{name.upper()}" for name in Settings.model_fields}
API = client.ApiClient()
MISSING = object()
# What a heavy partition's job would ask for through the `dagster-k8s/config` tag (values.yaml).
HEAVY = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
HEAVY_TAGS = {"dagster-k8s/config": json.dumps({"container_config": {"resources": HEAVY}})}
# Where the stores are: every process that talks to one must be told, or it asks its own loopback.
STORE_HOSTS = {"TALLY_KAFKA_HOST", "TALLY_PG_HOST", "TALLY_CASSANDRA_HOSTS", "TALLY_CASSANDRA_LOCAL_DC"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _documents() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name in NOT_API_OBJECTS:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs[f"{path.relative_to(K8S)}: {doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


DOCS = _documents()


def _one(kind: str, name: str) -> dict:
    (doc,) = [d for d in DOCS.values() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _container(workload: dict) -> dict:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


CONFIG = _one("ConfigMap", "tally-config")["data"]
SECRETS = {d["metadata"]["name"]: d for d in DOCS.values() if d["kind"] == "Secret"}
DATAFLOW = _one("StatefulSet", "tally-dataflow")
API_DEPLOYMENT = _one("Deployment", "tally-api")
QUALITY_CLAIM = _one("PersistentVolumeClaim", "tally-quality")
QUALITY_DIR = str(Settings(_env_file=None, state_dir=CONFIG["TALLY_STATE_DIR"]).quality_dir)


def _model_name(doc: dict) -> str:
    """apiVersion "apps/v1", kind "StatefulSet" -> the client's model "V1StatefulSet"."""
    version = doc["apiVersion"].rpartition("/")[2]
    return "V" + version[1:] + doc["kind"]


def _round_trip(doc: dict, model: str) -> dict:
    obj = API.deserialize(SimpleNamespace(data=json.dumps(doc)), model)
    return API.sanitize_for_serialization(obj)


def _lost(original, kept, path: str = "") -> list[str]:
    """Where `kept` (the round trip) differs from `original`: dropped fields, changed values."""
    if isinstance(original, dict) and isinstance(kept, dict):
        extra = [f"{path}.{k}: added" for k in kept.keys() - original.keys()]
        return extra + [p for k, v in original.items() for p in _lost(v, kept.get(k, MISSING), f"{path}.{k}")]
    if isinstance(original, list) and isinstance(kept, list) and len(original) == len(kept):
        return [p for i, (a, b) in enumerate(zip(original, kept, strict=True)) for p in _lost(a, b, f"{path}[{i}]")]
    if kept is MISSING:
        return [f"{path}: dropped (not a field of the model there)"]
    if type(original) is not type(kept) or original != kept:
        return [f"{path}: {original!r} became {kept!r}"]
    return []


# --- (1) every manifest is a valid API object of its kind -----------------------------------------


@pytest.mark.parametrize("name", sorted(DOCS))
def test_manifest_survives_the_kubernetes_model_unchanged(name):
    doc = DOCS[name]
    assert _lost(doc, _round_trip(doc, _model_name(doc))) == []


def test_round_trip_catches_a_misspelt_field_and_an_unquoted_string():
    doc = json.loads(json.dumps(API_DEPLOYMENT))
    _container(doc)["readinesProbe"] = _container(doc).pop("readinessProbe")
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"TALLY_PG_PORT": 5432}}
    assert _lost(doc, _round_trip(doc, "V1Deployment")) == [
        ".spec.template.spec.containers[0].readinesProbe: dropped (not a field of the model there)"
    ]
    assert _lost(config, _round_trip(config, "V1ConfigMap")) == [".data.TALLY_PG_PORT: 5432 became '5432'"]


def test_the_expected_objects_are_there():
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in DOCS.values())
    assert kinds == [
        "ConfigMap/tally-config",
        "Deployment/tally-api",
        "Namespace/tally",
        "PersistentVolumeClaim/tally-quality",
        "Secret/tally-dagster-postgresql",
        "Secret/tally-secrets",
        "Service/tally-api",
        "Service/tally-dataflow",
        "StatefulSet/tally-dataflow",
    ]
    assert all(d["metadata"].get("namespace", "tally") == "tally" for d in DOCS.values())


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load((K8S / "tally" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (K8S / "tally").glob("*.yaml")} - NOT_API_OBJECTS
    assert set(kustomization["resources"]) == on_disk - {"secret.template.yaml"}
    assert kustomization["namespace"] == "tally"


def test_secret_template_holds_only_marked_placeholders():
    for secret in SECRETS.values():
        assert "data" not in secret  # base64 would hide whether a real value slipped in
        assert set(secret["stringData"].values()) == {"CHANGE-ME"}


# --- (2) the manifests agree with the code --------------------------------------------------------


def _run_script(container: dict, fake: str, env: dict[str, str], tmp_path: Path) -> list[str]:
    """Run the container's shell command with `fake` (python, uvicorn) replaced by a stub that
    prints the port setting and its arguments, one a line: what the real process would be given."""
    stub = tmp_path / "bin" / fake
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$TALLY_DATAFLOW_METRICS_PORT" "$@"\n')
    stub.chmod(0o755)
    path = f"{stub.parent}{os.pathsep}{os.environ['PATH']}"
    argv = container["command"] + container["args"]
    done = subprocess.run(argv, env={"PATH": path, **env}, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _env_of(container: dict, **values: str) -> dict[str, str]:
    """The environment Kubernetes would give the container: envFrom, then env (values given here
    for fieldRefs, as the downward API would)."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(SECRETS[source["secretRef"]["name"]]["stringData"])
    for var in container.get("env", []):
        env[var["name"]] = var["value"] if "value" in var else values[var["name"]]
    return env


def test_each_dataflow_pod_runs_the_process_of_its_pod_index_of_replicas(tmp_path):
    container = _container(DATAFLOW)
    (ordinal,) = [e for e in container["env"] if e["name"] == "POD_ORDINAL"]
    assert ordinal["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    replicas = DATAFLOW["spec"]["replicas"]
    (metrics_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    # flow.py serves /metrics on the setting + the process index; the script lowers the setting by
    # the index, so every pod serves it on the containerPort.
    assert "dataflow_metrics_port + args.process" in inspect.getsource(dataflows.flow.main)
    for index in range(replicas):
        out = _run_script(container, "python", _env_of(container, POD_ORDINAL=str(index)), tmp_path)
        assert int(out[0]) + index == metrics_port
        assert out[1:] == ["-m", "dataflows.flow", "--process", str(index), "--processes", str(replicas)]
    # The pods own every partition once between them, and none is idle.
    partitions = int(CONFIG["TALLY_KAFKA_PARTITIONS"])
    owned = [dataflows.flow.owned_partitions(partitions, i, replicas) for i in range(replicas)]
    assert sorted(p for parts in owned for p in parts) == list(range(partitions))
    assert all(owned)


def test_dataflow_refuses_to_start_without_a_pod_index(tmp_path):
    container = _container(DATAFLOW)
    env = _env_of(container, POD_ORDINAL="")
    argv = container["command"] + container["args"]
    done = subprocess.run(argv, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True)
    assert done.returncode != 0 and "pod-index" in done.stderr


def test_dedup_state_is_on_the_dataflow_volume():
    settings = Settings(_env_file=None, state_dir=CONFIG["TALLY_STATE_DIR"])
    assert 'settings.state_dir / "dataflow" / "dedup"' in inspect.getsource(dataflows.flow.get_flow)
    dedup_dir = settings.state_dir / "dataflow" / "dedup"
    (claim,) = DATAFLOW["spec"]["volumeClaimTemplates"]
    (mount,) = [m for m in _container(DATAFLOW)["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert dedup_dir.is_relative_to(mount["mountPath"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert DATAFLOW["spec"]["serviceName"] == _one("Service", "tally-dataflow")["metadata"]["name"]
    assert _one("Service", "tally-dataflow")["spec"]["clusterIP"] == "None"


def test_dataflow_serves_metrics_to_prometheus_and_the_probe():
    container = _container(DATAFLOW)
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    assert port == int(CONFIG["TALLY_DATAFLOW_METRICS_PORT"])
    # Bound to every interface (the default, loopback, is out of the kubelet's and Prometheus' reach)...
    assert _env_of(container, POD_ORDINAL="0")["TALLY_METRICS_HOST"] == "0.0.0.0"
    assert "settings.metrics_host" in inspect.getsource(dataflows.flow.main)
    # ...so the kubelet asks it over the pod's network, on the named port.
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_api_probes_ask_real_routes_on_its_port(tmp_path):
    container = _container(API_DEPLOYMENT)
    # The API's own GET operations, as its OpenAPI document declares them: any other path falls
    # through to the UI's static files (a 404).
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]
    routes = {path for path, operations in paths.items() if "get" in operations}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" and "/readyz" in routes
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" and "/healthz" in routes
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == int(CONFIG["TALLY_API_PORT"])
    service = _one("Service", "tally-api")
    assert service["spec"]["selector"] == API_DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert API_DEPLOYMENT["spec"]["replicas"] == 2

    # The command: uvicorn on all interfaces, the configured port and workers, stale metrics removed.
    stale = tmp_path / "multiproc" / "counter_1.db"
    stale.parent.mkdir()
    stale.touch()
    env = {**_env_of(container), "PROMETHEUS_MULTIPROC_DIR": str(stale.parent)}
    out = _run_script(container, "uvicorn", env, tmp_path)
    assert not stale.exists()
    args = out[1:]
    assert args[:2] == ["--factory", "tally.api.app:create_app"]
    given = dict(zip(args[2::2], args[3::2], strict=False))
    assert given["--host"] == "0.0.0.0" and given["--port"] == CONFIG["TALLY_API_PORT"]
    assert given["--workers"] == CONFIG["TALLY_API_WORKERS"]


def _tally_names(obj) -> set[str]:
    return set(re.findall(r"\bTALLY_[A-Z0-9_]+", json.dumps(obj)))


def test_every_tally_variable_named_is_a_setting():
    named = set().union(*map(_tally_names, DOCS.values()), _tally_names(VALUES))
    assert named - SETTING_NAMES == set()
    assert set(CONFIG) <= SETTING_NAMES


def test_settings_take_the_configmap_and_secret_as_they_are():
    given = {**CONFIG, **SECRETS["tally-secrets"]["stringData"]}
    settings = Settings(_env_file=None, **{k.removeprefix("TALLY_").lower(): v for k, v in given.items()})
    assert {k: settings.as_env()[k] for k in given} == given


def _assert_store_hosts(env: dict[str, str], who: str) -> None:
    assert set(env) >= STORE_HOSTS, f"{who}: no {sorted(STORE_HOSTS - set(env))}"
    settings = Settings(_env_file=None, **{k.removeprefix("TALLY_").lower(): env[k] for k in STORE_HOSTS})
    hosts = {settings.kafka_host, settings.pg_host, *settings.cassandra_hosts}
    assert hosts.isdisjoint(LOOPBACK), f"{who}: a store on the pod's own loopback"


def test_api_and_dataflow_are_told_where_the_stores_are():
    for workload in (API_DEPLOYMENT, DATAFLOW):
        _assert_store_hosts(_env_of(_container(workload), POD_ORDINAL="0"), workload["metadata"]["name"])


def _quality_mount(volumes: list[dict], mounts: list[dict]) -> dict:
    """The one mount of the volume that is the quality report's claim."""
    claim = QUALITY_CLAIM["metadata"]["name"]
    (volume,) = [v for v in volumes if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    (mount,) = [m for m in mounts if m["name"] == volume["name"]]
    return mount


def test_the_quality_report_is_on_a_shared_claim_the_api_reads():
    assert QUALITY_CLAIM["spec"]["accessModes"] == ["ReadWriteMany"]  # run pods and API replicas, any node
    assert QUALITY_DIR == "/var/lib/tally/quality"
    volumes = API_DEPLOYMENT["spec"]["template"]["spec"]["volumes"]
    assert _quality_mount(volumes, _container(API_DEPLOYMENT)["volumeMounts"])["mountPath"] == QUALITY_DIR


def test_every_tally_variable_a_container_reads_is_given_to_it():
    for workload in (DATAFLOW, API_DEPLOYMENT):
        container = _container(workload)
        read = _tally_names([container["command"], container["args"], container.get("env", [])])
        assert read <= set(_env_of(container, POD_ORDINAL="0")), workload["metadata"]["name"]


# --- (3) Dagster: Helm values, and the Job a run launches -----------------------------------------

IMAGE = _container(DATAFLOW)["image"]
USER_CODE = VALUES["dagster-user-deployments"]["deployments"]
LAUNCHER = VALUES["runLauncher"]["config"]["k8sRunLauncher"]


def _names(sources: list[dict]) -> list[str]:
    return [s["name"] for s in sources]


def test_helm_values_run_our_code_location_with_the_k8s_run_launcher():
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    assert VALUES["dagsterDaemon"]["enabled"] is True
    (module,) = [entry["python_module"]["module_name"] for entry in WORKSPACE["load_from"]]
    (location,) = USER_CODE
    assert location["dagsterApiGrpcArgs"] == ["-m", module]
    assert f"{location['image']['repository']}:{location['image']['tag']}" == IMAGE
    assert _container(API_DEPLOYMENT)["image"] == IMAGE
    workload_env = [s.get("configMapRef", s.get("secretRef"))["name"] for s in _container(DATAFLOW)["envFrom"]]
    for config in (location, LAUNCHER):
        assert _names(config["envConfigMaps"]) + _names(config["envSecrets"]) == workload_env
    # The instance's database is ours, its password in a secret the template defines.
    assert VALUES["postgresql"]["enabled"] is False and VALUES["generatePostgresqlPasswordSecret"] is False
    assert VALUES["postgresql"]["postgresqlHost"] == CONFIG["TALLY_PG_HOST"]  # the server Tally writes to
    assert "postgresql-password" in SECRETS[VALUES["global"]["postgresqlSecretName"]]["stringData"]


def _helm_env(config: dict) -> dict[str, str]:
    """The TALLY_* environment a user-code deployment or the run launcher gives its pods: its config
    maps, then its own variables (`env` for a deployment, `envVars` "K=V" for the launcher)."""
    env = {}
    for source in config.get("envConfigMaps", []):
        env.update(_one("ConfigMap", source["name"])["data"])
    env.update({var["name"]: var["value"] for var in config.get("env", [])})
    env.update(dict(var.split("=", 1) for var in config.get("envVars", [])))
    return env


def test_dagster_code_location_and_runs_are_told_where_the_stores_are():
    # The location's sensors read Kafka and PostgreSQL; runs read every store.
    (location,) = USER_CODE
    _assert_store_hosts(_helm_env(location), "code location")
    _assert_store_hosts(_helm_env(LAUNCHER), "run launcher")


def test_run_pods_mount_the_quality_claim():
    mount = _quality_mount(LAUNCHER["volumes"], LAUNCHER["volumeMounts"])
    assert mount["mountPath"] == QUALITY_DIR and not mount.get("readOnly")  # the report's asset writes it
    # As the image's user, with the claim's files in its group.
    pod_security = LAUNCHER["runK8sConfig"]["podSpecConfig"]["securityContext"]
    api_security = API_DEPLOYMENT["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["fsGroup"] == pod_security["runAsUser"] == api_security["runAsUser"]


def _job_config() -> DagsterK8sJobConfig:
    return DagsterK8sJobConfig(
        job_image=IMAGE,
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="dagster-instance",
        postgres_password_secret=VALUES["global"]["postgresqlSecretName"],
        env_config_maps=_names(LAUNCHER["envConfigMaps"]),
        env_secrets=_names(LAUNCHER["envSecrets"]),
        resources=LAUNCHER["resources"],
        volume_mounts=LAUNCHER["volumeMounts"],
        volumes=LAUNCHER["volumes"],
    )


def _check_run_job(body: dict, resources: dict) -> None:
    assert _lost(body, _round_trip(body, "V1Job")) == []
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert [s.get("configMapRef", s.get("secretRef"))["name"] for s in container["envFrom"]] == [
        "tally-config",
        "tally-secrets",
    ]
    assert container["resources"] == resources
    volumes = body["spec"]["template"]["spec"]["volumes"]
    assert _quality_mount(volumes, container["volumeMounts"])["mountPath"] == QUALITY_DIR
    (password,) = [e for e in container["env"] if e["name"] == "DAGSTER_PG_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "tally-dagster-postgresql", "key": "postgresql-password"}
    assert body["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_run_job_is_a_valid_kubernetes_job_with_our_env():
    job = construct_dagster_k8s_job(
        _job_config(), args=["dagster", "api", "execute_run", "{}"], job_name=get_job_name_from_run_id("0123abcd")
    )
    _check_run_job(API.sanitize_for_serialization(job), LAUNCHER["resources"])


def test_heavy_partition_tag_sizes_the_run_pod():
    job = construct_dagster_k8s_job(
        _job_config(),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=get_job_name_from_run_id("0123abcd"),
        user_defined_k8s_config=get_user_defined_k8s_config(HEAVY_TAGS),
    )
    _check_run_job(API.sanitize_for_serialization(job), HEAVY)


@dg.op
def _noop() -> None:
    pass


@dg.job
def k8s_launch_probe() -> None:
    _noop()


def test_k8s_run_launcher_sends_that_job_for_a_run(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "none", "user": {"token": "not-a-token"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    sent = []
    batch_api = SimpleNamespace(create_namespaced_job=lambda body, namespace, **_: sent.append((namespace, body)))
    config = _job_config()
    launcher = K8sRunLauncher(
        service_account_name="dagster",
        instance_config_map=config.instance_config_map,
        postgres_password_secret=config.postgres_password_secret,
        dagster_home=config.dagster_home,
        job_image=IMAGE,
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
        job_namespace="tally",
        env_config_maps=config.env_config_maps,
        env_secrets=config.env_secrets,
        resources=config.resources,
        volume_mounts=config.volume_mounts,
        volumes=config.volumes,
        run_k8s_config={"pod_spec_config": LAUNCHER["runK8sConfig"]["podSpecConfig"]},
        k8s_client_batch_api=batch_api,
    )
    with dg.instance_for_test() as instance:
        launcher.register_instance(instance)
        origin = dg.reconstructable(k8s_launch_probe).get_python_origin()
        run = instance.create_run_for_job(k8s_launch_probe, job_code_origin=origin, tags=HEAVY_TAGS)
        launcher.launch_run(SimpleNamespace(dagster_run=run))
    ((namespace, job),) = sent
    assert namespace == "tally"
    body = API.sanitize_for_serialization(job)
    _check_run_job(body, HEAVY)
    assert body["spec"]["template"]["spec"]["containers"][0]["args"][:3] == ["dagster", "api", "execute_run"]
    # runK8sConfig as the chart renders it (run_k8s_config.pod_spec_config) reaches the pod.
    pod_security = LAUNCHER["runK8sConfig"]["podSpecConfig"]["securityContext"]
    assert body["spec"]["template"]["spec"]["securityContext"] == pod_security
