package test.kubernetes.admission.singleton_pod

import rego.v1

import data.kubernetes.admission.singleton_pod as policy
import data.test.magtape.fixtures

spec := {"containers": [fixtures.good_container("app")]}

test_pod_without_owner_fails if {
	policy.deny == {{
		"name": "singleton-pod",
		"severity": "LOW",
		"errcode": "MT1007",
		"msg": "[FAIL] LOW - \"lonely\" is a singleton pod. (MT1007)",
	}} with input.request as fixtures.pod({"name": "lonely", "namespace": "test1"}, spec)
}

test_empty_owner_list_fails if {
	{d.msg | some d in policy.deny} == {"[FAIL] LOW - \"lonely\" is a singleton pod. (MT1007)"} with input.request as fixtures.pod({"name": "lonely", "ownerReferences": []}, spec)
}

test_generated_name_is_reported if {
	req := fixtures.pod({"generateName": "lonely-"}, spec)
	{d.msg | some d in policy.deny} == {"[FAIL] LOW - \"lonely-\" is a singleton pod. (MT1007)"} with input.request as req
}

test_controller_owned_pod_passes if {
	owners := [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c", "controller": true}]
	count(policy.deny) == 0 with input.request as fixtures.pod({"name": "web-5d9c-x1", "ownerReferences": owners}, spec)
}

test_job_owned_pod_passes if {
	owners := [{"apiVersion": "batch/v1", "kind": "Job", "name": "batch", "controller": true}]
	count(policy.deny) == 0 with input.request as fixtures.pod({"name": "batch-x1", "ownerReferences": owners}, spec)
}

test_an_update_is_not_judged if {
	# The ReplicaSet controller releasing a Pod it no longer selects removes the
	# owner reference: that UPDATE must not be denied as a new failure.
	req := object.union(fixtures.pod({"name": "web-5d9c-x1"}, spec), {"operation": "UPDATE"})
	not policy.matches with input.request as req
	count(policy.deny) == 0 with input.request as req
}

test_a_request_without_an_operation_is_judged if {
	# Offline reviews without one are creations.
	req := object.remove(fixtures.pod({"name": "lonely"}, spec), ["operation"])
	policy.matches with input.request as req
}

test_workloads_are_ignored if {
	every kind in {"Deployment", "Job", "CronJob"} {
		not policy.matches with input.request as fixtures.workload(kind, spec)
	}
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [fixtures.pod({"name": "lonely"}, spec)] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
