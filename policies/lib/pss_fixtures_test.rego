# Request builders for the Pod Security Standards checks' tests
# (policies/pss-*): a pod spec as every workload kind, with pod annotations,
# and the data.magtape.pod_security document that selects a level.
package test.magtape.pss

import rego.v1

import data.test.magtape.fixtures

# What `magtape check --pod-security LEVEL:VERSION` puts in data.magtape.pod_security.
setting(level, version) := {"override": {"level": level, "version": version}}

# The versions a control is tested at: each one where some control changes,
# the one before it, and past the newest (the full sweep, v1.0 to latest as
# Pods and Deployments through both engines, is
# tests/test_pod_security_conformance.py).
versions := [
	"v1.0", "v1.7", "v1.8", "v1.18", "v1.19", "v1.21", "v1.22", "v1.23", "v1.24",
	"v1.25", "v1.26", "v1.27", "v1.28", "v1.29", "v1.30", "v1.31", "v1.32",
	"v1.33", "v1.34", "v1.35", "v1.36",
]

# minor(v) is N of "v1.N".
minor(v) := to_number(trim_prefix(v, "v1."))

# A compliant container under restricted at every version.
restricted_container(name) := {
	"name": name,
	"image": "registry.example.com/app:1.0",
	"securityContext": {
		"allowPrivilegeEscalation": false,
		"runAsNonRoot": true,
		"seccompProfile": {"type": "RuntimeDefault"},
		"capabilities": {"drop": ["ALL"]},
	},
}

# container(name, securityContext) is a bare container with that context.
container(name, sc) := {"name": name, "image": "registry.example.com/app:1.0", "securityContext": sc}

# request(kind, annotations, pod_spec): the pod spec (and its metadata's
# annotations) where `kind` keeps them.
request(kind, annotations, pod_spec) := fixtures.pod({"name": "p", "namespace": "test1", "annotations": annotations}, pod_spec) if {
	kind == "Pod"
} else := fixtures.request(kind, {
	"kind": kind,
	"metadata": {"name": "w", "namespace": "test1"},
	"spec": {"template": {"metadata": {"annotations": annotations}, "spec": pod_spec}},
}) if {
	kind != "CronJob"
} else := fixtures.request(kind, {
	"kind": kind,
	"metadata": {"name": "w", "namespace": "test1"},
	"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": annotations}, "spec": pod_spec}}}},
})

pod(pod_spec) := request("Pod", {}, pod_spec)

kinds := ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController", "CronJob"]
