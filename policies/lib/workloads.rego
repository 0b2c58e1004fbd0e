# Where a workload keeps its pod spec and containers, for every policy that
# checks pods. One place decides this so that all pod checks cover the same
# kinds (docs/policies.md, "Pod specs and containers").
#
# Every workload admission request evaluates these rules for eight policies.
# The rules about the request under review (kind, is_workload, long_running,
# pod_spec, containers, ...) are evaluated once per request and shared by all
# the policies that read them. They compare the kind with == and with the
# array template_kind_list, because building a set on every request costs
# more; the sets (kinds, ...) are for policy_metadata.targets, read when a
# policy set is loaded.
package magtape.lib.workloads

import rego.v1

# Kinds whose pod spec sits at spec.template.spec.
template_kind_list := ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"]

template_kinds := {k | some k in template_kind_list}

# Every kind that carries a pod spec ("workloads" in the catalogue).
kinds := template_kinds | {"Pod", "CronJob"}

# Run-to-completion work: its containers exit, so probes make no sense.
run_to_completion_kinds := {"Job", "CronJob"}

# Targets of the probe checks. Job-owned Pods are left out by `long_running`.
long_running_kinds := kinds - run_to_completion_kinds

# The kind of the object under review, read once per request.
kind := input.request.kind.kind

# The object under review is a workload: its kind is in `kinds`.
is_workload if kind in template_kind_list

is_workload if kind == "Pod"

is_workload if kind == "CronJob"

# pod_spec_of(k, obj) is the pod spec of obj, a `k`; undefined for other kinds.
pod_spec_of(k, obj) := obj.spec.template.spec if {
	k in template_kind_list
} else := obj.spec if {
	k == "Pod"
} else := obj.spec.jobTemplate.spec.template.spec if {
	k == "CronJob"
}

# The pod spec of the object under review (pod_spec_of, written out: a rule
# is cheaper than a function call, and this one is read by every pod check).
pod_spec := input.request.object.spec.template.spec if {
	kind in template_kind_list
} else := input.request.object.spec if {
	kind == "Pod"
} else := input.request.object.spec.jobTemplate.spec.template.spec if {
	kind == "CronJob"
}

# list(obj, key) is obj[key] when it is an array, else []: a missing or null
# list must not make a rule undefined (or raise an error) half-way.
list(obj, key) := obj[key] if {
	is_array(obj[key])
} else := []

# The application containers: what the probe and resource checks look at.
# (list(pod_spec, "containers"), written out: a function call costs more
# than this rule, which every pod check reads. type_name(pod_spec) holds for
# any pod_spec, so the rule is undefined exactly when pod_spec is.)
containers := pod_spec.containers if {
	is_array(pod_spec.containers)
} else := [] if {
	type_name(pod_spec)
}

# Every container that runs in the pod, including init and ephemeral
# (debug) containers: what the security checks look at, because a privileged
# init container is as dangerous as a privileged app container. (Most pods
# have neither; then the app containers are the answer, without copying.
# The test reads the fields with object.get, not `not is_array(x.f)`: OPA
# makes that undefined when x.f is absent, regorus true.)
all_containers := containers if {
	is_object(pod_spec)
	not is_array(object.get(pod_spec, "initContainers", null))
	not is_array(object.get(pod_spec, "ephemeralContainers", null))
} else := array.concat(
	array.concat(containers, list(pod_spec, "initContainers")),
	list(pod_spec, "ephemeralContainers"),
)

# The pod's volumes (list(pod_spec, "volumes"), written out as `containers`).
volumes := pod_spec.volumes if {
	is_array(pod_spec.volumes)
} else := [] if {
	type_name(pod_spec)
}

# The ownerReferences of the object under review ([] when there are none).
# (list(object.get(input.request.object, "metadata", {}), "ownerReferences"),
# written out: passing metadata, managedFields and all, to a function costs
# more than the rest of the Pod checks. Like that expression, it is []
# whenever there is an object at all, whatever its type.)
owner_references := input.request.object.metadata.ownerReferences if {
	is_array(input.request.object.metadata.ownerReferences)
} else := [] if {
	type_name(input.request.object)
}

# A Pod created by a Job (directly, or by a CronJob through its Job).
job_owned_pod if {
	kind == "Pod"
	some ref in owner_references
	ref.kind == "Job"
}

# The object is a workload whose containers are expected to keep running:
# its kind is in `long_running_kinds`, and it is not a Job-owned Pod.
long_running if {
	is_workload
	kind != "Job"
	kind != "CronJob"
	not job_owned_pod
}

# present(obj, key) holds when obj is an object and obj[key] is set to
# something other than null.
present(obj, key) if obj[key] != null

# get(obj, key, fallback) is object.get for a value of any type: fallback when
# obj is not an object. (object.get itself is undefined in OPA for a
# non-object, and an error in regorus.)
get(obj, key, fallback) := object.get(obj, key, fallback) if {
	is_object(obj)
} else := fallback
