package test.kubernetes.admission.host_path

import rego.v1

import data.kubernetes.admission.host_path as policy
import data.test.magtape.fixtures

spec(volumes) := {"containers": [fixtures.good_container("app")], "volumes": volumes}

host_volume := {"name": "docker-sock", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}

test_host_path_fails_in_every_workload_kind if {
	every kind in {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController", "CronJob"} {
		{d.msg | some d in policy.deny} == {"[FAIL] MED - hostPath is configured for volume \"docker-sock\" (MT1010)"} with input.request as fixtures.workload(kind, spec([host_volume]))
	}
}

test_violation_carries_metadata_and_details if {
	policy.deny == {{
		"name": "host-path",
		"severity": "MED",
		"errcode": "MT1010",
		"msg": "[FAIL] MED - hostPath is configured for volume \"docker-sock\" (MT1010)",
		"details": {"volume": "docker-sock", "path": "/var/run/docker.sock"},
	}} with input.request as fixtures.workload("DaemonSet", spec([host_volume]))
}

test_every_host_path_volume_is_reported if {
	volumes := [host_volume, {"name": "logs", "hostPath": {"path": "/var/log"}}, {"name": "tmp", "emptyDir": {"sizeLimit": "10Mi"}}]
	{d.msg | some d in policy.deny} == {
		"[FAIL] MED - hostPath is configured for volume \"docker-sock\" (MT1010)",
		"[FAIL] MED - hostPath is configured for volume \"logs\" (MT1010)",
	} with input.request as fixtures.workload("Deployment", spec(volumes))
}

test_other_volume_types_pass if {
	volumes := [{"name": "tmp", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}, {"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]
	count(policy.deny) == 0 with input.request as fixtures.workload("StatefulSet", spec(volumes))
}

test_other_kinds_are_ignored if {
	req := fixtures.request("PersistentVolume", {"metadata": {"name": "pv"}, "spec": {"hostPath": {"path": "/data"}}})
	not policy.matches with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [fixtures.workload("DaemonSet", spec([host_volume]))] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
