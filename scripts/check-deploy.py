#!/usr/bin/env python3
"""Check the deployment files under deploy/ against each other and against Pons.

    scripts/check-deploy.py [PATH/TO/pons]

Run it with the project venv's python (scripts/install-deps.sh installs
PyYAML there): ~/.cache/pons/venv/bin/python scripts/check-deploy.py

What it checks (every problem is reported, then it exits 1):
  - every YAML file under deploy/ parses (several documents per file are fine);
  - deploy/kubernetes/ holds a StatefulSet, Service, ConfigMap, Secret and
    PodDisruptionBudget, without namespaces, with selectors that match the
    pods;
  - the ports Pons listens on (deploy/docker/pons.toml for the image and
    compose, the ConfigMap's pons.toml for Kubernetes) agree with the
    Dockerfile's EXPOSE and HEALTHCHECK, the compose ports, the container
    ports, the Services' target ports and the probes;
  - spool.dir and cache.dir (and a sqlite job table's directory) are volumes
    in the Dockerfile, in compose and in the StatefulSet (its claims);
  - the Dockerfile runs as a non-root USER, has a HEALTHCHECK on /healthz and
    starts pons with the config it copies in;
  - compose's and the ConfigMap's references (hosts, credentials, secret files,
    Orthanc's modality entry for Pons) point at things that exist;
  - with PATH/TO/pons: `pons check-config` accepts both configs (the
    Kubernetes one with placeholder files for what the Secret mounts);
  - deploy/pons.service keeps its hardening and passes `systemd-analyze
    verify` (when systemd-analyze exists), with ExecStart pointed at
    /bin/true since pons is not installed here.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

if sys.version_info < (3, 11):
    sys.exit("check-deploy: needs Python 3.11 or newer (tomllib)")
import tomllib  # noqa: E402

try:
    import yaml
except ImportError:
    sys.exit(
        "check-deploy: PyYAML is missing: run scripts/install-deps.sh (it installs "
        "scripts/requirements.txt into ~/.cache/pons/venv) or `pip install pyyaml`"
    )

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
DOCKER_TOML = DEPLOY / "docker" / "pons.toml"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "pons.service"
REFERENCE_TOML = ROOT / "config" / "pons.toml"

problems: list[str] = []
notes: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def rel(path: Path | str) -> str:
    return os.path.relpath(path, ROOT)


# --- Pons configuration --------------------------------------------------------

DEFAULTS = {
    "web.listen": "127.0.0.1:8080",
    "spool.dir": "/var/lib/pons/spool",
    "cache.dir": "/var/lib/pons/cache",
    "cache.max_mb": 10240,
    "jobs.url": "sqlite:///var/lib/pons/jobs.db",
    "dimse.shutdown_grace_secs": 30,
}
# Keys whose values are files Pons reads.
FILE_KEYS = {
    "cert",
    "key",
    "client_ca",
    "ca",
    "token_file",
    "password_file",
    "client_secret_file",
    "service_account_file",
}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def parse_addr(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not m:
        raise ValueError(f"{text!r} is not address:port")
    host = m.group(1) or m.group(3)
    return host, int(m.group(2) or m.group(4))


class PonsConfig:
    """A parsed pons.toml and what the deployment files must agree with."""

    def __init__(self, where: str, text: str):
        self.where = where
        self.text = text
        self.data = tomllib.loads(text)

    def get(self, dotted: str, default=None):
        node = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return DEFAULTS.get(dotted, default)
            node = node[part]
        return node

    def faces(self) -> dict[str, int]:
        """Listener name -> port."""
        out = {"dimse": parse_addr(self.get("dimse.listen"))[1]}
        if self.get("dimse.tls") is not None:
            out["dimse-tls"] = parse_addr(self.get("dimse.tls.listen"))[1]
        out["web"] = parse_addr(self.get("web.listen"))[1]
        return out

    def web_host(self) -> str:
        return parse_addr(self.get("web.listen"))[0]

    def web_tls(self) -> bool:
        return self.get("web.tls") is not None

    def auth_kind(self) -> str:
        return (self.get("web.auth") or {}).get("kind", "none")

    def sqlite_path(self) -> str | None:
        url = self.get("jobs.url")
        if url.startswith("sqlite://"):
            return url[len("sqlite://") :].split("?", 1)[0]
        return None

    def postgres(self):
        url = self.get("jobs.url")
        if url.startswith(("postgres://", "postgresql://")):
            return urlsplit(url)
        return None

    def writable_dirs(self) -> dict[str, str]:
        out = {"spool.dir": self.get("spool.dir"), "cache.dir": self.get("cache.dir")}
        if (path := self.sqlite_path()) is not None:
            out["jobs.url (sqlite)"] = str(PurePosixPath(path).parent)
        audit = self.get("audit.file")
        if audit and audit != "stderr":
            out["audit.file"] = str(PurePosixPath(audit).parent)
        return out

    def files(self) -> list[tuple[str, str]]:
        """(dotted key, path) of every file Pons reads."""
        out: list[tuple[str, str]] = []

        def walk(node, prefix):
            if isinstance(node, dict):
                for k, v in node.items():
                    key = f"{prefix}.{k}" if prefix else k
                    if k in FILE_KEYS and isinstance(v, str):
                        out.append((key, v))
                    else:
                        walk(v, key)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{prefix}[{i}]")

        walk(self.data, "")
        return out


def under(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return p == d or d in p.parents


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(where: str, text: str) -> PonsConfig | None:
    try:
        cfg = PonsConfig(where, text)
        cfg.faces()  # the listen addresses must parse
        return cfg
    except (tomllib.TOMLDecodeError, ValueError, TypeError, AttributeError) as e:
        problem(where, f"not a usable pons.toml: {e}")
        return None


# --- YAML -----------------------------------------------------------------------

def load_yaml_files() -> dict[Path, list]:
    docs: dict[Path, list] = {}
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        problem(rel(DEPLOY), "no YAML files")
    for path in files:
        try:
            with path.open(encoding="utf-8") as f:
                docs[path] = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            problem(rel(path), f"does not parse as YAML: {e}")
    return docs


# --- Dockerfile -------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out = []
    buf, start = "", None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not buf and not stripped):
            continue
        if start is None:
            start = number
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        parts = buf.strip().split(None, 1)
        out.append((start, parts[0].upper(), parts[1].strip() if len(parts) > 1 else ""))
        buf, start = "", None
    return out


def exec_form(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        try:
            return json.loads(args)
        except json.JSONDecodeError:
            pass
    return shlex.split(args)


def config_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


class Dockerfile:
    def __init__(self, path: Path):
        self.where = rel(path)
        self.instructions = dockerfile_instructions(path.read_text(encoding="utf-8"))
        froms = [i for i, ins in enumerate(self.instructions) if ins[1] == "FROM"]
        if not froms:
            raise ValueError("no FROM")
        self.builder = self.instructions[: froms[-1]]
        self.final = self.instructions[froms[-1] :]
        self.final_image = self.final[0][2].split()[0]

    def last(self, name: str, stage=None):
        found = [ins for ins in (stage or self.final) if ins[1] == name]
        return found[-1] if found else None

    def all(self, name: str, stage=None):
        return [ins for ins in (stage or self.final) if ins[1] == name]

    def exposed(self) -> set[int]:
        ports = set()
        for _, _, args in self.all("EXPOSE"):
            for token in args.split():
                ports.add(int(token.split("/")[0]))
        return ports

    def volumes(self) -> set[str]:
        out = set()
        for _, _, args in self.all("VOLUME"):
            vals = exec_form(args) if args.startswith("[") else args.split()
            out.update(v.rstrip("/") or "/" for v in vals)
        return out

    def argv(self) -> list[str]:
        entry = self.last("ENTRYPOINT")
        cmd = self.last("CMD")
        return (exec_form(entry[2]) if entry else []) + (exec_form(cmd[2]) if cmd else [])

    def copies(self, stage=None) -> list[tuple[list[str], str]]:
        """(sources, destination) of COPY/ADD from the build context."""
        out = []
        for _, _, args in self.all("COPY", stage) + self.all("ADD", stage):
            words = [w for w in shlex.split(args)]
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            if len(words) >= 2:
                out.append((words[:-1], words[-1]))
        return out

    def user_uid(self) -> tuple[str | None, int | None]:
        user = self.last("USER")
        if user is None:
            return None, None
        name = user[2].split(":")[0]
        if name.isdigit():
            return name, int(name)
        for _, _, args in self.all("RUN"):
            m = re.search(r"useradd\b[^;&|]*?(?:--uid|-u)[ =](\d+)[^;&|]*?\s" + re.escape(name) + r"\b", args)
            if m:
                return name, int(m.group(1))
        return name, None


def check_dockerfile(df: Dockerfile, docker_cfg: PonsConfig | None, k8s_cfg: PonsConfig | None):
    w = df.where
    # Builder: a release build of the locked dependency graph.
    builds = [a for _, _, a in df.all("RUN", df.builder) if "cargo build" in a]
    if not df.builder:
        problem(w, "not multi-stage: the runtime image would carry the Rust toolchain")
    elif not builds or not all("--release" in a and "--locked" in a for a in builds):
        problem(w, "the builder stage must run `cargo build --release --locked`")
    for sources, _ in df.copies(df.builder):
        for s in sources:
            if s.rstrip("/").startswith("fuzz"):
                problem(w, "the builder copies fuzz/, a separate workspace")

    # Every file copied from the context exists and survives the ignore file.
    ignore = DOCKERIGNORE.read_text(encoding="utf-8").splitlines() if DOCKERIGNORE.exists() else []
    ignore = [line.strip() for line in ignore if line.strip() and not line.strip().startswith("#")]
    for stage in (df.builder, df.final):
        for sources, _ in df.copies(stage):
            for s in sources:
                s = s.rstrip("/")
                if not (ROOT / s).exists():
                    problem(w, f"COPY {s}: no such file in the build context ({rel(ROOT)})")
                excluded = False
                for pattern in ignore:
                    negate = pattern.startswith("!")
                    pat = pattern.lstrip("!").rstrip("/")
                    if fnmatch(s, pat) or s.startswith(pat + "/") or pat == "*":
                        excluded = not negate
                if excluded:
                    problem(rel(DOCKERIGNORE), f"excludes {s}, which {w} copies")

    # Runtime stage.
    if df.final_image.startswith(("rust", "docker.io/rust", "docker.io/library/rust")):
        problem(w, f"the runtime stage is {df.final_image}, a build image")
    user, uid = df.user_uid()
    if user is None:
        problem(w, "the runtime stage has no USER: pons would run as root")
    elif user in ("root", "0") or uid == 0:
        problem(w, f"USER {user} is root")
    elif uid is None:
        problem(w, f"USER {user}: cannot tell its uid (use a numeric USER for Kubernetes' runAsNonRoot)")

    argv = df.argv()
    if not argv or argv[0] not in ("pons", "/usr/local/bin/pons"):
        problem(w, f"ENTRYPOINT/CMD {argv} does not start pons")
    if "serve" not in argv:
        problem(w, f"ENTRYPOINT/CMD {argv} does not run `pons serve`")
    config_path = config_arg(argv)
    copied = {}
    for sources, dest in df.copies():
        for s in sources:
            copied[s] = dest + PurePosixPath(s).name if dest.endswith("/") else dest
    toml_dest = copied.get(rel(DOCKER_TOML))
    if toml_dest is None:
        problem(w, f"does not COPY {rel(DOCKER_TOML)} into the image")
    elif config_path != toml_dest:
        problem(w, f"pons serve reads --config {config_path}, but {rel(DOCKER_TOML)} is copied to {toml_dest}")

    exposed = df.exposed()
    if docker_cfg is not None:
        faces = docker_cfg.faces()
        for name, port in faces.items():
            if port not in exposed:
                problem(w, f"EXPOSE lacks {port} ({name} listen port in {docker_cfg.where})")
        if k8s_cfg is not None:  # the image serves both configs
            known = set(faces.values()) | set(k8s_cfg.faces().values())
            for port in sorted(exposed - known):
                problem(w, f"EXPOSE {port}, but neither {docker_cfg.where} nor the ConfigMap listens on it")

        vols = df.volumes()
        for key, d in docker_cfg.writable_dirs().items():
            if key in ("spool.dir", "cache.dir"):
                if d.rstrip("/") not in vols:
                    problem(w, f"no VOLUME {d} ({key} in {docker_cfg.where})")
            elif not any(under(d, v) for v in vols):
                problem(w, f"{d} ({key} in {docker_cfg.where}) is on no VOLUME")

        hc = df.last("HEALTHCHECK")
        if hc is None or hc[2].upper().startswith("NONE"):
            problem(w, "no HEALTHCHECK")
        else:
            urls = re.findall(r"https?://[^\s\"'|;]+", hc[2])
            if not urls:
                problem(w, f"HEALTHCHECK asks no URL: {hc[2]}")
            for url in urls:
                u = urlsplit(url)
                want_scheme = "https" if docker_cfg.web_tls() else "http"
                if u.path != "/healthz":
                    problem(w, f"HEALTHCHECK asks {u.path or '/'}, not /healthz")
                if u.port != faces["web"]:
                    problem(w, f"HEALTHCHECK asks port {u.port}, but web.listen in {docker_cfg.where} is port {faces['web']}")
                if u.scheme != want_scheme:
                    problem(w, f"HEALTHCHECK uses {u.scheme}, the web face speaks {want_scheme}")
                web_host = docker_cfg.web_host()
                reachable = web_host in ("0.0.0.0", "::") or web_host == u.hostname or (
                    is_loopback(web_host) and is_loopback(u.hostname or "")
                )
                if not reachable:
                    problem(w, f"HEALTHCHECK asks {u.hostname}, but the web face listens on {web_host}")
            if "curl" in hc[2] and not any("curl" in a for _, _, a in df.all("RUN")):
                problem(w, "HEALTHCHECK uses curl, which the runtime stage does not install")
    return uid


# --- compose ----------------------------------------------------------------------

def env_dict(env) -> dict[str, str]:
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    out = {}
    for item in env or []:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def compose_ports(service: dict) -> list[tuple[str | None, int]]:
    """(host ip, container port) of each published port."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip"), int(str(p["target"]).split("/")[0])))
            continue
        spec = str(p).split("/")[0]
        host_ip = None
        m = re.match(r"^\[([^\]]+)\]:(.*)$", spec)
        if m:
            host_ip, spec = m.group(1), m.group(2)
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
        out.append((host_ip, int(parts[-1].split("-")[0])))
    return out


def compose_mounts(service: dict) -> list[tuple[str | None, str]]:
    """(source, target) of each volume of a service."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source"), v["target"].rstrip("/")))
        else:
            parts = str(v).split(":")
            if len(parts) == 1:
                out.append((None, parts[0].rstrip("/")))
            else:
                out.append((parts[0], parts[1].rstrip("/")))
    return out


def seconds(text) -> float | None:
    if isinstance(text, (int, float)):
        return float(text)
    total, found = 0.0, False
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text)):
        total += float(value) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
        found = True
    return total if found else None


def check_compose(doc: dict, cfg: PonsConfig, exposed: set[int]):
    w = rel(COMPOSE)
    services = doc.get("services") or {}
    for name in ("pons", "orthanc", "postgres"):
        if name not in services:
            problem(w, f"no service {name!r}")
    pons = services.get("pons")
    if not pons:
        return
    build = pons.get("build")
    if not isinstance(build, dict):
        problem(w, "pons: build must name a context and deploy/Dockerfile")
    else:
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
        if context != ROOT:
            problem(w, f"pons: build context is {context}, not the repository root")
        if dockerfile != DOCKERFILE.resolve():
            problem(w, f"pons: builds {dockerfile}, not {rel(DOCKERFILE)}")

    faces = cfg.faces()
    published = compose_ports(pons)
    container_ports = {port for _, port in published}
    for name, port in faces.items():
        if port not in container_ports:
            problem(w, f"pons: port {port} ({name} listen port in {cfg.where}) is not published")
    for host_ip, port in published:
        if port not in faces.values():
            problem(w, f"pons: publishes container port {port}, which {cfg.where} does not listen on")
        if port not in exposed:
            problem(w, f"pons: publishes {port}, which {rel(DOCKERFILE)} does not EXPOSE")
        if port == faces["web"] and cfg.auth_kind() == "none" and not is_loopback(host_ip or ""):
            problem(w, f"pons: the web port {port} has no authentication ({cfg.where}) but is published on "
                       f"{host_ip or 'every interface'}; publish it on 127.0.0.1")

    mounts = compose_mounts(pons)
    declared = set((doc.get("volumes") or {}).keys())
    targets = {t: s for s, t in mounts}
    for source, target in mounts:
        if source and not source.startswith((".", "/", "~")) and source not in declared:
            problem(w, f"pons: volume {source!r} is not declared under volumes:")
    for key, d in cfg.writable_dirs().items():
        d = d.rstrip("/")
        if key in ("spool.dir", "cache.dir"):
            if d not in targets:
                problem(w, f"pons: no volume at {d} ({key} in {cfg.where})")
            elif targets[d] is None:
                problem(w, f"pons: {d} ({key}) is an anonymous volume; name it so it outlives the container")
        elif not any(under(d, t) for t in targets):
            problem(w, f"pons: {d} ({key} in {cfg.where}) is on no volume")

    depends = pons.get("depends_on") or {}
    depends = set(depends if isinstance(depends, list) else depends.keys())

    def host_port(where_key: str, host: str, port: int | None):
        if is_loopback(host):
            problem(w, f"{cfg.where} {where_key} points at {host}: inside the container that is Pons itself")
            return None
        if host == "host.docker.internal":
            if not any("host.docker.internal" in str(h) for h in pons.get("extra_hosts") or []):
                problem(w, f"pons: {cfg.where} {where_key} uses host.docker.internal; add extra_hosts host-gateway")
            return None
        svc = services.get(host)
        if svc is None:
            problem(w, f"{cfg.where} {where_key} names host {host!r}, which is not a compose service")
            return None
        ports = {p for _, p in compose_ports(svc)} | {int(str(e).split("/")[0]) for e in svc.get("expose") or []}
        if port is not None and ports and port not in ports:
            problem(w, f"{cfg.where} {where_key} uses {host}:{port}, but {host} lists ports {sorted(ports)}")
        return svc

    upstream = cfg.get("upstream.url")
    orthanc_env = env_dict((services.get("orthanc") or {}).get("environment"))
    if upstream:
        u = urlsplit(upstream)
        host_port("upstream.url", u.hostname, u.port or (443 if u.scheme == "https" else 80))
        if u.hostname == "orthanc":
            http_port = orthanc_env.get("ORTHANC__HTTP_PORT")
            if http_port and int(http_port) != u.port:
                problem(w, f"orthanc: HTTP port {http_port}, but upstream.url uses {u.port}")
            dw = orthanc_env.get("DICOM_WEB_PLUGIN_ENABLED", orthanc_env.get("ORTHANC__DICOM_WEB__ENABLE", ""))
            if dw.lower() != "true":
                problem(w, "orthanc: the DICOMweb plugin is not enabled (DICOM_WEB_PLUGIN_ENABLED: \"true\")")
    for i, pacs in enumerate(cfg.get("pacs") or []):
        host_port(f"pacs[{i}] host", pacs["host"], pacs["port"])
        if pacs["host"] == "orthanc":
            aet = orthanc_env.get("ORTHANC__DICOM_AET", "ORTHANC")
            if aet != pacs["ae_title"]:
                problem(w, f"orthanc: DicomAet {aet!r}, but pacs[{i}].ae_title is {pacs['ae_title']!r}")
            dport = orthanc_env.get("ORTHANC__DICOM_PORT")
            if dport and int(dport) != pacs["port"]:
                problem(w, f"orthanc: DICOM port {dport}, but pacs[{i}].port is {pacs['port']}")
            # Orthanc must know Pons: the calling AE of C-FIND/C-GET, the C-MOVE destination.
            try:
                modalities = json.loads(orthanc_env.get("ORTHANC__DICOM_MODALITIES", "{}"))
            except json.JSONDecodeError as e:
                problem(w, f"orthanc: ORTHANC__DICOM_MODALITIES is not JSON: {e}")
                modalities = {}
            pons_names = {"pons", pons.get("hostname"), pons.get("container_name")} - {None}
            want = (cfg.get("dimse.ae_title"), faces["dimse"])
            entries = [m if isinstance(m, list) else [m.get("AET"), m.get("Host"), m.get("Port")]
                       for m in modalities.values()]
            if not any(len(e) >= 3 and e[0] == want[0] and e[1] in pons_names and int(e[2]) == want[1]
                       for e in entries):
                problem(w, f"orthanc: ORTHANC__DICOM_MODALITIES has no entry "
                           f"[{want[0]!r}, 'pons', {want[1]}] for Pons")
    for i, ae in enumerate(cfg.get("ae") or []):
        if ae["host"] == "host.docker.internal":
            host_port(f"ae[{i}] host", ae["host"], ae["port"])

    pg = cfg.postgres()
    if pg is not None:
        svc = host_port("jobs.url", pg.hostname, pg.port or 5432)
        if svc is not None:
            env = env_dict(svc.get("environment"))
            want = {
                "POSTGRES_USER": unquote(pg.username or ""),
                "POSTGRES_PASSWORD": unquote(pg.password or ""),
                "POSTGRES_DB": pg.path.lstrip("/") or unquote(pg.username or ""),
            }
            for k, v in want.items():
                if env.get(k, "") != v:
                    problem(w, f"{pg.hostname}: {k} is {env.get(k)!r}, jobs.url in {cfg.where} wants {v!r}")
            if pg.hostname not in depends:
                problem(w, f"pons: does not depend_on {pg.hostname} (its job table)")
    grace = seconds(pons.get("stop_grace_period", "10s"))
    if grace is not None and grace <= cfg.get("dimse.shutdown_grace_secs"):
        problem(w, f"pons: stop_grace_period {grace:g}s is not longer than dimse.shutdown_grace_secs "
                   f"({cfg.get('dimse.shutdown_grace_secs')})")


# --- Kubernetes ---------------------------------------------------------------------

API_VERSIONS = {
    "StatefulSet": "apps/v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "PodDisruptionBudget": "policy/v1",
}


def quantity_mib(q) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTPE]i?|k)?", str(q))
    if not m:
        raise ValueError(f"cannot read the quantity {q!r}")
    factor = {
        None: 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    }[m.group(2)]
    return float(m.group(1)) * factor / 2**20


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class K8s:
    def __init__(self, docs: dict[Path, list]):
        self.objects: list[tuple[str, dict]] = []
        for path, ds in docs.items():
            if K8S in path.parents:
                for d in ds:
                    self.objects.append((rel(path), d))

    def of(self, kind):
        return [(w, o) for w, o in self.objects if isinstance(o, dict) and o.get("kind") == kind]

    def named(self, kind, name):
        for w, o in self.of(kind):
            if (o.get("metadata") or {}).get("name") == name:
                return w, o
        return None, None


def k8s_config(k8s: K8s, image_config_path: str | None):
    """The StatefulSet's pons container and the pons.toml it reads."""
    sts = k8s.of("StatefulSet")
    if len(sts) != 1:
        problem(rel(K8S), f"expected one StatefulSet, found {len(sts)}")
        return None
    where, obj = sts[0]
    pod = obj["spec"]["template"]["spec"]
    containers = pod.get("containers") or []
    container = next((c for c in containers if c.get("name") == "pons"), containers[0] if containers else None)
    if container is None:
        problem(where, "no containers")
        return None
    argv = (container.get("command") or []) + (container.get("args") or [])
    config_path = config_arg(argv) or image_config_path
    if config_path is None:
        problem(where, "cannot tell which config pons reads (no --config in args)")
        return None
    mounts = container.get("volumeMounts") or []
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mount = max((m for m in mounts if under(config_path, m["mountPath"])),
                key=lambda m: len(m["mountPath"]), default=None)
    if mount is None:
        problem(where, f"{config_path} (--config) is not mounted: the image's own config would be used")
        return None
    volume = volumes.get(mount["name"], {})
    cm_name = (volume.get("configMap") or {}).get("name")
    if cm_name is None:
        problem(where, f"{config_path} is on volume {mount['name']!r}, which is not a ConfigMap")
        return None
    cm_where, cm = k8s.named("ConfigMap", cm_name)
    if cm is None:
        problem(where, f"ConfigMap {cm_name!r} (mounted at {mount['mountPath']}) is not in {rel(K8S)}")
        return None
    relpath = str(PurePosixPath(config_path).relative_to(mount["mountPath"]))
    items = (volume.get("configMap") or {}).get("items")
    key = next((i["key"] for i in items if i["path"] == relpath), None) if items else relpath
    text = (cm.get("data") or {}).get(key) if key else None
    if text is None:
        problem(cm_where, f"no key giving {config_path} (mounted from ConfigMap {cm_name!r})")
        return None
    cfg = load_config(f"{cm_where} ({cm_name}/{key})", text)
    return cfg and {
        "where": where, "obj": obj, "pod": pod, "container": container,
        "config_path": config_path, "config_mount": mount["mountPath"], "cfg": cfg,
    }


def mounted_files(k8s: K8s, ctx) -> dict[str, tuple[str, str, str]]:
    """mountPath -> (kind, object name, where) for ConfigMap and Secret volumes."""
    volumes = {v["name"]: v for v in ctx["pod"].get("volumes") or []}
    out = {}
    for m in ctx["container"].get("volumeMounts") or []:
        v = volumes.get(m["name"], {})
        if "secret" in v:
            out[m["mountPath"]] = ("Secret", v["secret"].get("secretName"), v["secret"].get("items"))
        elif "configMap" in v:
            out[m["mountPath"]] = ("ConfigMap", v["configMap"].get("name"), v["configMap"].get("items"))
    return out


def object_keys(obj: dict) -> set[str]:
    return set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys()) | set(
        (obj.get("binaryData") or {}).keys())


def check_k8s(k8s: K8s, ctx, image_uid: int | None):
    for kind, api in API_VERSIONS.items():
        if not k8s.of(kind):
            problem(rel(K8S), f"no {kind}")
    for where, o in k8s.objects:
        if not isinstance(o, dict) or not o.get("kind") or not (o.get("metadata") or {}).get("name"):
            problem(where, "a document without kind or metadata.name")
            continue
        want = API_VERSIONS.get(o["kind"])
        if want and o.get("apiVersion") != want:
            problem(where, f"{o['kind']} {o['metadata']['name']}: apiVersion {o.get('apiVersion')}, want {want}")
        if "namespace" in o["metadata"]:
            problem(where, f"{o['kind']} {o['metadata']['name']} sets a namespace; these manifests are namespace-less")
    if ctx is None:
        return
    where, sts, pod, c, cfg = ctx["where"], ctx["obj"], ctx["pod"], ctx["container"], ctx["cfg"]
    spec = sts["spec"]
    labels = (spec["template"].get("metadata") or {}).get("labels") or {}
    if not matches((spec.get("selector") or {}).get("matchLabels") or {}, labels):
        problem(where, "spec.selector does not match the pod template's labels")
    replicas = spec.get("replicas", 1)

    # Ports: container ports are exactly the listeners.
    faces = cfg.faces()
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    numbers = set(ports.values())
    for name, port in faces.items():
        if port not in numbers:
            problem(where, f"container port {port} ({name} listen port in {cfg.where}) is missing")
    for name, port in ports.items():
        if port not in faces.values():
            problem(where, f"container port {name} {port}: {cfg.where} listens on no such port")

    def resolve(ref):
        if isinstance(ref, int):
            return ref if ref in numbers else None
        return ports.get(ref)

    # Probes.
    scheme = "HTTPS" if cfg.web_tls() else "HTTP"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet")
        if get is None:
            problem(where, f"no {probe} httpGet {path}")
            continue
        if get.get("path") != path:
            problem(where, f"{probe} asks {get.get('path')}, want {path}")
        if resolve(get.get("port")) != faces["web"]:
            problem(where, f"{probe} port {get.get('port')!r} is not the web port {faces['web']}")
        if get.get("scheme", "HTTP") != scheme:
            problem(where, f"{probe} scheme {get.get('scheme', 'HTTP')}, the web face speaks {scheme}")

    # Services.
    targeted = set()
    svc_names = {}
    for w, svc in k8s.of("Service"):
        s = svc.get("spec") or {}
        name = svc["metadata"]["name"]
        svc_names[name] = s
        if not matches(s.get("selector") or {}, labels):
            problem(w, f"Service {name}: its selector does not match the pods")
        for p in s.get("ports") or []:
            target = resolve(p.get("targetPort", p.get("port")))
            if target is None:
                problem(w, f"Service {name} port {p.get('name')}: targetPort {p.get('targetPort')!r} "
                           f"is no container port")
            elif s.get("clusterIP") != "None":
                targeted.add(target)
            if p.get("protocol", "TCP") != "TCP":
                problem(w, f"Service {name} port {p.get('name')}: Pons speaks TCP")
    for name, port in faces.items():
        if port not in targeted:
            problem(rel(K8S), f"no Service reaches the {name} port {port}")
    gov = svc_names.get(spec.get("serviceName"))
    if gov is None:
        problem(where, f"serviceName {spec.get('serviceName')!r} is not a Service here")
    elif gov.get("clusterIP") != "None":
        problem(where, f"serviceName {spec.get('serviceName')!r} is not headless (clusterIP: None)")

    # Security context.
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
        problem(where, "runAsNonRoot is not true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid == 0:
        problem(where, "runAsUser is 0")
    if image_uid is not None and uid is not None and uid != image_uid:
        problem(where, f"runAsUser {uid}, but the image's USER is {image_uid}")
    if not csc.get("readOnlyRootFilesystem"):
        problem(where, "readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation", True):
        problem(where, "allowPrivilegeEscalation is not false")

    # Volumes: spool and cache on the pod's own claims; writable dirs writable.
    claims = {t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates") or []}
    mounts = c.get("volumeMounts") or []
    by_path = {m["mountPath"].rstrip("/"): m for m in mounts}
    for key, d in cfg.writable_dirs().items():
        d = d.rstrip("/")
        if key in ("spool.dir", "cache.dir"):
            m = by_path.get(d)
            if m is None:
                problem(where, f"nothing mounted at {d} ({key} in {cfg.where})")
            elif m["name"] not in claims:
                problem(where, f"{d} ({key}) is volume {m['name']!r}, not one of the volumeClaimTemplates")
        m = max((m for m in mounts if under(d, m["mountPath"])), key=lambda m: len(m["mountPath"]), default=None)
        if m is None or m.get("readOnly") or m["mountPath"].rstrip("/") in mounted_files(k8s, ctx):
            problem(where, f"{d} ({key} in {cfg.where}) is not on a writable volume (the root filesystem is read-only)")
    cache_claim = claims.get((by_path.get(cfg.get("cache.dir").rstrip("/")) or {}).get("name"))
    if cache_claim:
        size = quantity_mib(cache_claim["spec"]["resources"]["requests"]["storage"])
        if size < cfg.get("cache.max_mb"):
            problem(where, f"the cache claim ({size:g} MiB) is smaller than cache.max_mb ({cfg.get('cache.max_mb')})")

    # The job table: shared when there are several replicas; node names per pod.
    if cfg.sqlite_path() is not None and replicas > 1:
        problem(cfg.where, f"{replicas} replicas need a shared job table: jobs.url must be postgres://")
    if cfg.get("jobs.node") is not None:
        problem(cfg.where, "jobs.node is set: every replica would claim that name; leave it unset "
                           "(hostname = pod name)")
    env = {e["name"]: e for e in c.get("env") or []}
    pg = cfg.postgres()
    if pg is not None and pg.password is None and not ({"PGPASSWORD", "PGPASSFILE"} & env.keys()):
        problem(where, "jobs.url has no password and neither PGPASSWORD nor PGPASSFILE is set")
    for e in env.values():
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            w, secret = k8s.named("Secret", ref.get("name"))
            if secret is not None and ref.get("key") not in object_keys(secret):
                problem(w, f"Secret {ref['name']} has no key {ref['key']!r} (env {e['name']})")

    # Files Pons reads: each must come from a mounted ConfigMap or Secret key.
    sources = mounted_files(k8s, ctx)
    for mount_path, (kind, name, items) in sources.items():
        w, obj = k8s.named(kind, name)
        if obj is None:
            problem(where, f"{kind} {name!r} (mounted at {mount_path}) is not in {rel(K8S)}")
            continue
        if kind == "Secret" and obj.get("type", "Opaque") != "Opaque":
            problem(w, f"Secret {name}: type {obj.get('type')}, want Opaque")
        for item in items or []:
            if item["key"] not in object_keys(obj):
                problem(w, f"{kind} {name} has no key {item['key']!r} (mounted at {mount_path}/{item['path']})")
    for key, path in cfg.files():
        mount_path = max((m for m in sources if under(path, m)), key=len, default=None)
        if mount_path is None:
            problem(cfg.where, f"{key} = {path}: no ConfigMap or Secret is mounted there")
            continue
        kind, name, items = sources[mount_path]
        relpath = str(PurePosixPath(path).relative_to(mount_path))
        _, obj = k8s.named(kind, name)
        provided = {i["path"] for i in items} if items else (object_keys(obj) if obj else set())
        if relpath not in provided:
            problem(cfg.where, f"{key} = {path}: {kind} {name} mounted at {mount_path} has no {relpath}")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= cfg.get("dimse.shutdown_grace_secs"):
        problem(where, f"terminationGracePeriodSeconds {grace} is not longer than dimse.shutdown_grace_secs "
                       f"({cfg.get('dimse.shutdown_grace_secs')})")

    # PodDisruptionBudget.
    for w, pdb in k8s.of("PodDisruptionBudget"):
        s = pdb.get("spec") or {}
        if not matches((s.get("selector") or {}).get("matchLabels") or {}, labels):
            problem(w, "PodDisruptionBudget selector does not match the pods")
        if ("minAvailable" in s) == ("maxUnavailable" in s):
            problem(w, "PodDisruptionBudget needs exactly one of minAvailable and maxUnavailable")
        if isinstance(s.get("minAvailable"), int) and s["minAvailable"] >= replicas:
            problem(w, f"minAvailable {s['minAvailable']} with {replicas} replica(s) forbids every eviction "
                       "(node drains hang)")


def check_config_with_pons(pons: str, docker_cfg_path: Path, k8s: K8s, ctx) -> int:
    """Run `pons check-config` on both configs; returns how many passed."""
    passed = 0

    def run(where: str, path: Path) -> None:
        nonlocal passed
        try:
            r = subprocess.run([pons, "check-config", str(path)], capture_output=True, text=True, timeout=60)
        except OSError as e:
            problem(where, f"cannot run {pons}: {e}")
            return
        if r.returncode != 0:
            detail = (r.stderr or r.stdout).strip().replace(str(path), where)
            problem(where, "pons check-config failed:\n    " + "\n    ".join(detail.splitlines()))
        else:
            passed += 1

    run(rel(docker_cfg_path), docker_cfg_path)
    if ctx is None:
        return passed
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as tmp:
        # Files mounted from Secrets exist only in the pod: stand in empty
        # placeholders (check-config only checks that TLS files exist).
        text = ctx["cfg"].text
        fake_root = Path(tmp, "root")
        for mount_path, (kind, name, items) in mounted_files(k8s, ctx).items():
            if mount_path == ctx["config_mount"]:
                continue
            _, obj = k8s.named(kind, name)
            names = [i["path"] for i in items] if items else sorted(object_keys(obj or {}))
            target = fake_root / mount_path.lstrip("/")
            for n in names:
                (target / n).parent.mkdir(parents=True, exist_ok=True)
                (target / n).write_text("")
            text = re.sub(r'(["\'])' + re.escape(mount_path.rstrip("/") + "/"), lambda m: m.group(1) + str(target) + "/", text)
        path = Path(tmp, "pons.toml")
        path.write_text(text)
        run(ctx["cfg"].where, path)
    return passed


# --- systemd -------------------------------------------------------------------------

REQUIRED_UNIT = {
    "User": "pons",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "NoNewPrivileges": "true",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectControlGroups": "true",
    "LockPersonality": "true",
    "MemoryDenyWriteExecute": "true",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
    "StateDirectory": "pons",
    "LimitNOFILE": "65536",
}


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        if s.startswith("["):
            section = s
            continue
        if section == "[Service]" and "=" in s:
            k, _, v = s.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def check_unit() -> str:
    w = rel(UNIT)
    text = UNIT.read_text(encoding="utf-8")
    settings = unit_settings(text)
    for k, v in REQUIRED_UNIT.items():
        if settings.get(k, [None])[-1] != v:
            problem(w, f"{k}={v} is missing (have {settings.get(k)})")
    families = set(" ".join(settings.get("RestrictAddressFamilies", [])).split())
    if families != {"AF_INET", "AF_INET6", "AF_UNIX"}:
        problem(w, f"RestrictAddressFamilies={' '.join(sorted(families))}, want AF_INET AF_INET6 AF_UNIX")
    if "@system-service" not in " ".join(settings.get("SystemCallFilter", [])):
        problem(w, "SystemCallFilter=@system-service is missing")
    if not any("-HUP" in v and "$MAINPID" in v for v in settings.get("ExecReload", [])):
        problem(w, "ExecReload=/bin/kill -HUP $MAINPID is missing (SIGHUP reloads TLS certificates)")
    if settings.get("AmbientCapabilities"):
        problem(w, "AmbientCapabilities is set; the default ports need none")
    start = shlex.split((settings.get("ExecStart") or [""])[-1])
    if "serve" not in start or config_arg(start) is None:
        problem(w, "ExecStart does not run `pons serve --config ...`")
    # The config's defaults for state must be writable under ProtectSystem=strict.
    writable = [p for v in settings.get("ReadWritePaths", []) for p in v.split()]
    writable += [f"/var/lib/{d}" for v in settings.get("StateDirectory", []) for d in v.split()]
    writable += [f"/var/log/{d}" for v in settings.get("LogsDirectory", []) for d in v.split()]
    ref = load_config(rel(REFERENCE_TOML), REFERENCE_TOML.read_text(encoding="utf-8"))
    if ref is not None:
        for key, d in ref.writable_dirs().items():
            if not any(under(d, p.lstrip("-")) for p in writable):
                problem(w, f"{d} ({key} default in {rel(REFERENCE_TOML)}) is read-only under ProtectSystem=strict")

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        notes.append("systemd-analyze not found: unit not verified")
        return "unit checked (systemd-analyze missing)"
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as tmp:
        # pons is not installed here: verify would only say so.
        copy = Path(tmp, UNIT.name)
        copy.write_text(re.sub(r"(?m)^(Exec\w*=[-+!@:]*)/usr/local/bin/pons\b", r"\1/bin/true", text))
        r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        output = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
        if r.returncode != 0 or output:
            detail = "\n    ".join(line.replace(str(copy), w) for line in output) or f"exit {r.returncode}"
            problem(w, f"systemd-analyze verify:\n    {detail}")
        score = subprocess.run([analyze, "security", "--offline=yes", str(copy)],
                               capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: (\S+ \S+)", score.stdout + score.stderr)
    return "systemd-analyze verify ok" + (f" (exposure {m.group(1)})" if m else "")


# --- main ----------------------------------------------------------------------------

def section(name, fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # a malformed file: say where, not a traceback
        problem(name, f"could not be checked: {type(e).__name__}: {e}")
        return None


def main() -> int:
    pons = sys.argv[1] if len(sys.argv) > 1 else None
    if len(sys.argv) > 2 or (pons and pons.startswith("-")):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    if pons is not None and not (os.path.isfile(pons) and os.access(pons, os.X_OK)):
        print(f"check-deploy: {pons} is not an executable file", file=sys.stderr)
        return 2

    docs = load_yaml_files()
    ndocs = sum(len(d) for d in docs.values())
    docker_cfg = section(rel(DOCKER_TOML), lambda: load_config(rel(DOCKER_TOML), DOCKER_TOML.read_text()))
    df = section(rel(DOCKERFILE), Dockerfile, DOCKERFILE)
    k8s = K8s(docs)
    ctx = section(rel(K8S), k8s_config, k8s, config_arg(df.argv()) if df else None)
    k8s_cfg = ctx["cfg"] if ctx else None

    uid = section(rel(DOCKERFILE), check_dockerfile, df, docker_cfg, k8s_cfg) if df else None
    if COMPOSE in docs and docs[COMPOSE] and docker_cfg is not None:
        section(rel(COMPOSE), check_compose, docs[COMPOSE][0], docker_cfg, df.exposed() if df else set())
    elif COMPOSE not in docs:
        problem(rel(COMPOSE), "missing or unreadable")
    section(rel(K8S), check_k8s, k8s, ctx, uid)

    checked_with_pons = None
    if pons is not None:
        checked_with_pons = section("pons check-config", check_config_with_pons, pons, DOCKER_TOML, k8s, ctx)
    unit = section(rel(UNIT), check_unit) if UNIT.exists() else problem(rel(UNIT), "missing")

    if problems:
        for p in problems:
            print(f"check-deploy: {p}", file=sys.stderr)
        print(f"check-deploy: FAILED: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    def ports(cfg):
        return ", ".join(f"{n} {p}" for n, p in cfg.faces().items())

    parts = [
        f"{ndocs} YAML documents in {len(docs)} files",
        f"ports agree (image/compose: {ports(docker_cfg)}; kubernetes: {ports(k8s_cfg)})",
        "spool/cache volumes agree",
        f"pons check-config: {checked_with_pons} configs ok" if pons else "pons check-config skipped (no pons path given)",
        unit or "unit not checked",
    ]
    print("check-deploy: OK: " + "; ".join(parts) + "".join(f"; note: {n}" for n in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
