# Where a workload keeps its pod spec and containers, for every policy that
# checks pods. One place decides this so that all pod checks cover the same
# kinds (docs/policies.md, "Pod specs and containers").
package magtape.lib.workloads

import rego.v1

# Every kind that carries a pod spec ("workloads" in the catalogue).
kinds := {
	"Pod",
	"Deployment",
	"StatefulSet",
	"DaemonSet",
	"ReplicaSet",
	"Job",
	"ReplicationController",
	"CronJob",
}

# Kinds whose pod spec sits at spec.template.spec.
template_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}

# Run-to-completion work: its containers exit, so probes make no sense.
run_to_completion_kinds := {"Job", "CronJob"}

# Targets of the probe checks. Job-owned Pods are left out by `long_running`.
long_running_kinds := kinds - run_to_completion_kinds

# pod_spec_of(kind, obj) is the pod spec of obj; undefined for other kinds.
pod_spec_of(kind, obj) := obj.spec if kind == "Pod"

pod_spec_of(kind, obj) := obj.spec.template.spec if kind in template_kinds

pod_spec_of(kind, obj) := obj.spec.jobTemplate.spec.template.spec if kind == "CronJob"

# The pod spec of the object under review.
pod_spec := pod_spec_of(input.request.kind.kind, input.request.object)

# list(obj, key) is obj[key] when it is an array, else []: a missing or null
# list must not make a rule undefined (or raise an error) half-way.
list(obj, key) := obj[key] if is_array(obj[key])

list(obj, key) := [] if not is_array(obj[key])

# The application containers: what the probe and resource checks look at.
containers := list(pod_spec, "containers")

# Every container that runs in the pod, including init and ephemeral
# (debug) containers: what the security checks look at, because a privileged
# init container is as dangerous as a privileged app container.
all_containers := array.concat(
	array.concat(containers, list(pod_spec, "initContainers")),
	list(pod_spec, "ephemeralContainers"),
)

volumes := list(pod_spec, "volumes")

# The ownerReferences of the object under review ([] when there are none).
owner_references := list(object.get(input.request.object, "metadata", {}), "ownerReferences")

# A Pod created by a Job (directly, or by a CronJob through its Job).
job_owned_pod if {
	input.request.kind.kind == "Pod"
	some ref in owner_references
	ref.kind == "Job"
}

# The object is a workload whose containers are expected to keep running.
long_running if {
	input.request.kind.kind in long_running_kinds
	not job_owned_pod
}

# present(obj, key) holds when obj[key] is set to something other than null.
present(obj, key) if obj[key] != null
