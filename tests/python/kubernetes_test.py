"""Static checks of deploy/kubernetes (ctest: kubernetes_manifests; needs python3-yaml).

No cluster is involved: these parse every manifest and check that what the pieces say of each
other agrees (selectors and labels, ports, the Secret's name and keys, mounts and paths) and with
the rest of the repository (the image of docker-compose.yml, the port of the Dockerfile, the flags
that server/main.cc and worker/agent/flags.cc accept).
"""

import os
import re
import unittest

try:
    import yaml
    YAML_MISSING = None
except ImportError as e:
    YAML_MISSING = "PyYAML is not importable (%s); apt-get install python3-yaml" % e

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(SOURCE, "deploy", "kubernetes")
WORKLOADS = ("StatefulSet", "Deployment")


def read(*parts):
    with open(os.path.join(SOURCE, *parts), encoding="utf-8") as f:
        return f.read()


def flags_in(*parts):
    """Every "--flag" string literal in a C++ file: the flags its parser accepts."""
    return set(re.findall(r'"(--[a-z][a-z0-9-]*)"', read(*parts)))


def flag_values(args):
    """{flag: value} of an args list of "--flag", "value" pairs (or "--flag=value")."""
    out, i = {}, 0
    while i < len(args):
        arg = str(args[i])
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            out[flag] = value
            i += 1
        elif arg.startswith("--"):
            out[arg] = str(args[i + 1]) if i + 1 < len(args) and not str(args[i + 1]).startswith("--") else None
            i += 2 if out[arg] is not None else 1
        else:
            i += 1
    return out


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def setUpModule():
    if YAML_MISSING:
        raise unittest.SkipTest(YAML_MISSING)


class ManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = {}
        for folder, _, names in os.walk(DEPLOY):
            for name in sorted(names):
                if name.endswith((".yaml", ".yml")):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as f:
                        docs = [d for d in yaml.safe_load_all(f) if d is not None]
                    cls.files[os.path.relpath(path, DEPLOY)] = docs
        # The base: every document but the variants' patches and kustomizations.
        cls.base = [d for rel, docs in cls.files.items() if not rel.startswith("variants")
                    for d in docs if d.get("kind") != "Kustomization"]
        cls.compose = yaml.safe_load(read("docker-compose.yml"))

    def one(self, kind, name):
        found = [d for d in self.base if d["kind"] == kind and d["metadata"]["name"] == name]
        self.assertEqual(len(found), 1, "%s/%s" % (kind, name))
        return found[0]

    def container(self, workload, name):
        found = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
        self.assertEqual(len(found), 1)
        return found[0]

    def listen_port(self):
        coordinator = self.container(self.one("StatefulSet", "moesweep-coordinator"), "coordinator")
        return host_port(flag_values(coordinator["args"])["--listen"])[1]

    # -- every document --------------------------------------------------------------------------

    def test_every_document_parses_and_names_itself(self):
        self.assertIn("kustomization.yaml", self.files)
        for rel, docs in self.files.items():
            self.assertTrue(docs, rel + " holds no document")
            for doc in docs:
                self.assertIsInstance(doc, dict, rel)
                self.assertTrue(doc.get("apiVersion"), rel)
                self.assertTrue(doc.get("kind"), rel)
                if doc["kind"] != "Kustomization":
                    self.assertTrue(doc.get("metadata", {}).get("name"), "%s: %s without metadata.name" % (rel, doc["kind"]))

    def test_kustomizations_list_files_that_exist_and_the_base_lists_every_manifest(self):
        for rel, docs in self.files.items():
            for doc in docs:
                if doc["kind"] != "Kustomization":
                    continue
                folder = os.path.dirname(os.path.join(DEPLOY, rel))
                for resource in doc.get("resources", []):
                    self.assertTrue(os.path.exists(os.path.join(folder, resource)), "%s: %s" % (rel, resource))
                for patch in doc.get("patches", []):
                    self.assertTrue(os.path.isfile(os.path.join(folder, patch["path"])), "%s: %s" % (rel, patch))
        listed = set(self.files["kustomization.yaml"][0]["resources"])
        top = {rel for rel in self.files if "/" not in rel and rel != "kustomization.yaml"}
        self.assertEqual(listed, top)

    def test_selectors_match_the_template_labels(self):
        workloads = [d for d in self.base if d["kind"] in WORKLOADS]
        self.assertEqual(sorted(d["kind"] for d in workloads), ["Deployment", "StatefulSet"])
        for w in workloads:
            selector = w["spec"]["selector"]["matchLabels"]
            labels = w["spec"]["template"]["metadata"]["labels"]
            self.assertTrue(selector)
            self.assertLessEqual(selector.items(), labels.items(), w["metadata"]["name"])
        service = self.one("Service", "moesweep-coordinator")
        coordinator = self.one("StatefulSet", "moesweep-coordinator")
        self.assertLessEqual(service["spec"]["selector"].items(),
                             coordinator["spec"]["template"]["metadata"]["labels"].items())
        worker = self.one("Deployment", "moesweep-worker")
        self.assertFalse(service["spec"]["selector"].items() <= worker["spec"]["template"]["metadata"]["labels"].items(),
                         "the Service must not select workers")

    # -- images, commands and flags ---------------------------------------------------------------

    def test_images_are_the_docker_compose_image(self):
        image = self.compose["services"]["coordinator"]["image"]
        self.assertEqual(self.compose["services"]["worker"]["image"], image)
        for w in (d for d in self.base if d["kind"] in WORKLOADS):
            for c in w["spec"]["template"]["spec"]["containers"]:
                self.assertEqual(c["image"], image, w["metadata"]["name"])

    def test_every_flag_is_one_the_programs_accept(self):
        accepted = {"moesweep-coordinator": flags_in("server", "main.cc"),
                    "moesweep-worker": flags_in("worker", "agent", "flags.cc")}
        self.assertIn("--token-file", accepted["moesweep-coordinator"])
        self.assertIn("--kill-grace", accepted["moesweep-worker"])
        installed = re.search(r"set\(MOESWEEP_PROGRAMS ([^)]*)\)", read("CMakeLists.txt")).group(1).split()
        self.assertIn("moesweep-coordinator", installed)
        containers = []
        for rel, docs in self.files.items():
            for doc in docs:
                if doc["kind"] in WORKLOADS:
                    containers += [(rel, c) for c in doc["spec"]["template"]["spec"]["containers"]]
        worker_program = {"worker": "moesweep-worker", "coordinator": "moesweep-coordinator"}
        for rel, c in containers:
            program = c.get("command", [worker_program[c["name"]]])[0]
            self.assertIn(program, accepted, "%s: %s" % (rel, program))
            flags = [a for a in map(str, c.get("args", [])) if a.startswith("--")]
            self.assertTrue(flags, "%s: %s without flags" % (rel, c["name"]))
            for flag in flags:
                self.assertIn(flag.split("=")[0], accepted[program], "%s: %s does not accept %s" % (rel, program, flag))

    def test_the_coordinator_matches_the_compose_command(self):
        c = self.container(self.one("StatefulSet", "moesweep-coordinator"), "coordinator")
        compose = self.compose["services"]["coordinator"]["command"]
        self.assertEqual(c["command"][0], compose[0])
        mine, theirs = flag_values(c["args"]), flag_values(compose[1:])
        self.assertEqual(mine["--listen"], theirs["--listen"])
        self.assertEqual(mine["--db"], theirs["--db"])

    # -- ports --------------------------------------------------------------------------------------

    def test_ports_agree_everywhere(self):
        port = self.listen_port()
        dockerfile = read("Dockerfile")
        self.assertIn("EXPOSE %d" % port, dockerfile)
        self.assertIn("%d:%d" % (port, port), self.compose["services"]["coordinator"]["ports"])
        c = self.container(self.one("StatefulSet", "moesweep-coordinator"), "coordinator")
        container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(container_ports, {"grpc": port})
        service = self.one("Service", "moesweep-coordinator")
        (service_port,) = service["spec"]["ports"]
        target = service_port["targetPort"]
        self.assertEqual(container_ports[target] if isinstance(target, str) else target, port)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(c[probe]["grpc"]["port"], port, probe)
        for rel, docs in self.files.items():
            for doc in docs:
                if doc.get("metadata", {}).get("name") != "moesweep-worker":
                    continue
                for w in doc["spec"]["template"]["spec"]["containers"]:
                    host, dial = host_port(flag_values(w["args"])["--coordinator"])
                    self.assertEqual(host, service["metadata"]["name"], rel)
                    self.assertEqual(dial, service_port["port"], rel)

    # -- coordinator ---------------------------------------------------------------------------------

    def test_one_coordinator_with_its_database_on_a_claim(self):
        sts = self.one("StatefulSet", "moesweep-coordinator")
        self.assertEqual(sts["spec"]["replicas"], 1)  # the database lock allows one
        self.assertEqual(self.one("Service", sts["spec"]["serviceName"])["kind"], "Service")
        claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
        c = self.container(sts, "coordinator")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        db = flag_values(c["args"])["--db"]
        self.assertIn(mounts[os.path.dirname(db)], claims)
        self.assertEqual(claims[mounts[os.path.dirname(db)]]["spec"]["accessModes"], ["ReadWriteOnce"])

    def test_the_token_file_and_the_worker_token_come_from_one_secret(self):
        sts = self.one("StatefulSet", "moesweep-coordinator")
        c = self.container(sts, "coordinator")
        token_file = flag_values(c["args"])["--token-file"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        mount = mounts[os.path.dirname(token_file)]
        self.assertTrue(mount.get("readOnly"))
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        secret = volumes[mount["name"]]["secret"]
        self.assertIn(os.path.basename(token_file), [i["path"] for i in secret["items"]])
        worker = self.container(self.one("Deployment", "moesweep-worker"), "worker")
        env = {e["name"]: e for e in worker["env"]}
        ref = env["MOESWEEP_TOKEN"]["valueFrom"]["secretKeyRef"]
        self.assertEqual(ref["name"], secret["secretName"])
        guide = read("deploy", "kubernetes", "README.md")
        self.assertIn("create secret generic %s" % secret["secretName"], guide)
        for key in [i["key"] for i in secret["items"]] + [ref["key"]]:
            self.assertIn("--from-file=%s" % key, guide)
        self.assertIn("MOESWEEP_TOKEN", read("rpc", "channel.h"))  # what the worker reads

    # -- workers -------------------------------------------------------------------------------------

    def test_workers_outlive_their_kill_grace(self):
        for rel, docs in self.files.items():
            for doc in docs:
                if doc.get("metadata", {}).get("name") != "moesweep-worker":
                    continue
                grace = self.one("Deployment", "moesweep-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                for w in doc["spec"]["template"]["spec"]["containers"]:
                    kill_grace = float(flag_values(w["args"]).get("--kill-grace", 10))
                    self.assertGreater(grace, kill_grace + 10, rel)

    def test_the_gpu_variant_asks_for_a_gpu(self):
        patch = self.files[os.path.join("variants", "gpu", "worker-gpu.yaml")][0]
        self.assertEqual((patch["kind"], patch["metadata"]["name"]), ("Deployment", "moesweep-worker"))
        (c,) = patch["spec"]["template"]["spec"]["containers"]
        self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 1)
        self.assertEqual(flag_values(c["args"])["--gpus"], "0")

    def test_the_guide_says_ci_does_not_run_a_cluster(self):
        self.assertRegex(read("deploy", "kubernetes", "README.md"), r"NOT\s+exercised on a live cluster")


if __name__ == "__main__":
    unittest.main()
