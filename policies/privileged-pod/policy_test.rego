package test.kubernetes.admission.privileged_pod

import rego.v1

import data.kubernetes.admission.privileged_pod as policy
import data.test.magtape.fixtures

privileged(name) := object.union(fixtures.good_container(name), {"securityContext": {"privileged": true}})

test_privileged_container_fails_in_every_workload_kind if {
	every kind in {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController", "CronJob"} {
		{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Found privileged Security Context for container \"app\" (MT2001)"} with input.request as fixtures.workload(kind, {"containers": [privileged("app")]})
	}
}

test_violation_carries_metadata_and_details if {
	policy.deny == {{
		"name": "privileged-pod",
		"severity": "HIGH",
		"errcode": "MT2001",
		"msg": "[FAIL] HIGH - Found privileged Security Context for container \"app\" (MT2001)",
		"details": {"container": "app"},
	}} with input.request as fixtures.workload("Deployment", {"containers": [privileged("app")]})
}

test_privileged_init_container_fails if {
	spec := {"initContainers": [privileged("setup")], "containers": [fixtures.good_container("app")]}
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Found privileged Security Context for container \"setup\" (MT2001)"} with input.request as fixtures.workload("StatefulSet", spec)
}

test_privileged_ephemeral_container_fails if {
	spec := {"containers": [fixtures.good_container("app")], "ephemeralContainers": [privileged("debugger")]}
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Found privileged Security Context for container \"debugger\" (MT2001)"} with input.request as fixtures.workload("Pod", spec)
}

test_forged_job_owner_does_not_bypass_the_check if {
	owners := [{"apiVersion": "batch/v1", "kind": "Job", "name": "not-really", "controller": true}]
	req := fixtures.pod({"name": "sneaky", "ownerReferences": owners}, {"containers": [privileged("app")]})
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - Found privileged Security Context for container \"app\" (MT2001)"} with input.request as req
}

test_unprivileged_containers_pass if {
	spec := {"containers": [
		fixtures.good_container("plain"),
		object.union(fixtures.good_container("explicit"), {"securityContext": {"privileged": false, "runAsNonRoot": true}}),
	]}
	count(policy.deny) == 0 with input.request as fixtures.workload("Deployment", spec)
}

test_other_kinds_are_ignored if {
	req := fixtures.request("Service", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
	not policy.matches with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [fixtures.workload("Deployment", {"containers": [privileged("app")]})] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
