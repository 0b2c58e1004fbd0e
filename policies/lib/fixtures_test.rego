# Request builders shared by the policy tests: an AdmissionReview `request`
# (what tests put in place with `with input.request as ...`) for any kind,
# with the pod spec where that kind keeps it. Not a test package itself.
package test.magtape.fixtures

import rego.v1

namespace := "test1"

# request(kind, obj) is the AdmissionReview request for creating obj.
request(kind, obj) := {
	"uid": "00000000-0000-0000-0000-000000000000",
	"kind": {"group": "", "version": "v1", "kind": kind},
	"namespace": namespace,
	"name": object.get(obj.metadata, "name", ""),
	"operation": "CREATE",
	"userInfo": {"username": "tester"},
	"object": obj,
}

# workload(kind, pod_spec) is the request for a `kind` carrying pod_spec.
workload(kind, pod_spec) := request(kind, workload_object(kind, pod_spec))

workload_object(kind, pod_spec) := {
	"kind": kind,
	"metadata": {"name": "test-pod", "namespace": namespace, "ownerReferences": [{"kind": "ReplicaSet", "name": "test-rs", "controller": true}]},
	"spec": pod_spec,
} if {
	kind == "Pod"
}

workload_object(kind, pod_spec) := {
	"kind": kind,
	"metadata": {"name": sprintf("test-%s", [lower(kind)]), "namespace": namespace},
	"spec": {"template": {"metadata": {"labels": {"app": "test"}}, "spec": pod_spec}},
} if {
	kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
}

workload_object(kind, pod_spec) := {
	"kind": kind,
	"metadata": {"name": "test-cronjob", "namespace": namespace},
	"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}},
} if {
	kind == "CronJob"
}

# pod(metadata, pod_spec) is the request for a Pod with the given metadata.
pod(metadata, pod_spec) := request("Pod", {"kind": "Pod", "metadata": metadata, "spec": pod_spec})

# A container that passes every container check.
good_container(name) := {
	"name": name,
	"image": "registry.example.com/app:1.0",
	"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
	"readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
	"resources": {
		"limits": {"cpu": "500m", "memory": "256Mi"},
		"requests": {"cpu": "100m", "memory": "128Mi"},
	},
	"ports": [{"name": "http", "containerPort": 8080}],
}

# A container that sets nothing optional.
bare_container(name) := {"name": name, "image": "registry.example.com/app:1.0"}

# identity(x) is the {"name", "severity", "errcode"} of a policy_metadata or
# of one element of deny; identities(denies) the set of them for a deny set.
# The built-in policies write their identity out again in each deny rule
# (messages.failure, for speed); their tests check it against policy_metadata:
# fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)}
identity(x) := {"name": x.name, "severity": x.severity, "errcode": x.errcode}

identities(denies) := {identity(d) | some d in denies}
