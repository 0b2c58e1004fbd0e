package test.kubernetes.admission.resource_requests

import rego.v1

import data.kubernetes.admission.resource_requests as policy
import data.test.magtape.fixtures

with_resources(resources) := object.union(fixtures.bare_container("app"), {"resources": resources})

test_both_missing_fails_in_every_workload_kind if {
	every kind in {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController", "CronJob"} {
		{d.msg | some d in policy.deny} == {"[FAIL] LOW - Resource requests missing (CPU/MEM) for container \"app\" (MT1004)"} with input.request as fixtures.workload(kind, {"containers": [fixtures.bare_container("app")]})
	}
}

test_cpu_missing if {
	spec := {"containers": [with_resources({"requests": {"memory": "128Mi"}})]}
	{d.msg | some d in policy.deny} == {"[FAIL] LOW - Resource requests missing (CPU) for container \"app\" (MT1004)"} with input.request as fixtures.workload("Deployment", spec)
}

test_memory_missing if {
	spec := {"containers": [with_resources({"requests": {"cpu": 1}, "limits": {"memory": "64Mi"}})]}
	{d.msg | some d in policy.deny} == {"[FAIL] LOW - Resource requests missing (MEM) for container \"app\" (MT1004)"} with input.request as fixtures.workload("Deployment", spec)
}

test_null_limits_count_as_missing if {
	spec := {"containers": [with_resources({"requests": null, "limits": {"cpu": "1", "memory": "1Gi"}})]}
	{d.msg | some d in policy.deny} == {"[FAIL] LOW - Resource requests missing (CPU/MEM) for container \"app\" (MT1004)"} with input.request as fixtures.workload("Pod", spec)
}

test_violation_carries_metadata_and_details if {
	policy.deny == {{
		"name": "resource-requests",
		"severity": "LOW",
		"errcode": "MT1004",
		"msg": "[FAIL] LOW - Resource requests missing (MEM) for container \"app\" (MT1004)",
		"details": {"container": "app", "missing": ["MEM"]},
	}} with input.request as fixtures.workload("Job", {"containers": [with_resources({"requests": {"cpu": "250m"}})]})
}

test_every_container_is_reported if {
	spec := {"containers": [fixtures.bare_container("one"), fixtures.good_container("two"), fixtures.bare_container("three")]}
	{d.msg | some d in policy.deny} == {
		"[FAIL] LOW - Resource requests missing (CPU/MEM) for container \"one\" (MT1004)",
		"[FAIL] LOW - Resource requests missing (CPU/MEM) for container \"three\" (MT1004)",
	} with input.request as fixtures.workload("CronJob", spec)
}

test_compliant_workload_passes if {
	count(policy.deny) == 0 with input.request as fixtures.workload("Deployment", {"containers": [fixtures.good_container("app")]})
}

test_init_containers_are_not_checked if {
	spec := {"initContainers": [fixtures.bare_container("init")], "containers": [fixtures.good_container("app")]}
	count(policy.deny) == 0 with input.request as fixtures.workload("StatefulSet", spec)
}

test_other_kinds_are_ignored if {
	req := fixtures.request("ConfigMap", {"metadata": {"name": "cm"}, "data": {}})
	not policy.matches with input.request as req
	count(policy.deny) == 0 with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [fixtures.workload("Job", {"containers": [with_resources({"requests": {"cpu": "250m"}})]})] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
