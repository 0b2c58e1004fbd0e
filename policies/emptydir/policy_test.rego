package test.kubernetes.admission.emptydir

import rego.v1

import data.kubernetes.admission.emptydir as policy
import data.test.magtape.fixtures

spec(volumes) := {"containers": [fixtures.good_container("app")], "volumes": volumes}

sized(size) := spec([{"name": "cache", "emptyDir": {"sizeLimit": size}}])

not_set := "[FAIL] MED - Size limit of emptyDir volume \"cache\" is not set (MT1009)"

too_big := "[FAIL] MED - Size limit of emptyDir volume \"cache\" is greater than 100 Megabytes (MT1009)"

test_missing_size_limit_fails_in_every_workload_kind if {
	every kind in {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController", "CronJob"} {
		{d.msg | some d in policy.deny} == {not_set} with input.request as fixtures.workload(kind, spec([{"name": "cache", "emptyDir": {}}]))
	}
}

test_violation_carries_metadata_and_details if {
	policy.deny == {{
		"name": "emptydir",
		"severity": "MED",
		"errcode": "MT1009",
		"msg": too_big,
		"details": {"volume": "cache", "sizeLimit": "1Gi"},
	}} with input.request as fixtures.workload("Deployment", sized("1Gi"))
}

test_memory_medium_without_limit_fails if {
	{d.msg | some d in policy.deny} == {not_set} with input.request as fixtures.workload("Deployment", spec([{"name": "cache", "emptyDir": {"medium": "Memory"}}]))
}

test_limits_up_to_100_megabytes_pass if {
	every size in ["64Mi", "100M", "50M", "95Mi", "100000000", 1024, "500Ki"] {
		count(policy.deny) == 0 with input.request as fixtures.workload("Deployment", sized(size))
	}
}

test_limits_above_100_megabytes_fail if {
	every size in ["1Gi", "100Mi", "101M", "1G", "100000001", 200000000] {
		{d.msg | some d in policy.deny} == {too_big} with input.request as fixtures.workload("StatefulSet", sized(size))
	}
}

test_milli_suffix_is_tiny_not_mega if {
	count(policy.deny) == 0 with input.request as fixtures.workload("Pod", sized("100m"))
}

test_invalid_size_limit_counts_as_not_set if {
	{d.msg | some d in policy.deny} == {not_set} with input.request as fixtures.workload("Pod", sized("lots"))
	{d.msg | some d in policy.deny} == {not_set} with input.request as fixtures.workload("Pod", sized(null))
}

test_every_volume_is_reported if {
	volumes := [
		{"name": "a", "emptyDir": {}},
		{"name": "b", "emptyDir": {"sizeLimit": "2Gi"}},
		{"name": "c", "emptyDir": {"sizeLimit": "64Mi"}},
		{"name": "d", "configMap": {"name": "settings"}},
	]
	{d.msg | some d in policy.deny} == {
		"[FAIL] MED - Size limit of emptyDir volume \"a\" is not set (MT1009)",
		"[FAIL] MED - Size limit of emptyDir volume \"b\" is greater than 100 Megabytes (MT1009)",
	} with input.request as fixtures.workload("CronJob", spec(volumes))
}

test_other_volume_types_pass if {
	volumes := [{"name": "cfg", "configMap": {"name": "settings"}}, {"name": "tok", "secret": {"secretName": "tok"}}]
	count(policy.deny) == 0 with input.request as fixtures.workload("Deployment", spec(volumes))
}

test_other_kinds_are_ignored if {
	req := fixtures.request("PersistentVolumeClaim", {"metadata": {"name": "pvc"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}})
	not policy.matches with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [fixtures.workload("Deployment", sized("1Gi")), fixtures.workload("Pod", spec([{"name": "cache", "emptyDir": {}}]))] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
