package test.kubernetes.admission.readiness_probe

import rego.v1

import data.kubernetes.admission.readiness_probe as policy
import data.test.magtape.fixtures

missing_app := "[FAIL] LOW - Readiness Probe missing for container \"app\" (MT1002)"

bare_app_spec := {"containers": [fixtures.bare_container("app"), fixtures.good_container("good")]}

test_missing_probe_fails_in_every_long_running_kind if {
	every kind in {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"} {
		{d.msg | some d in policy.deny} == {missing_app} with input.request as fixtures.workload(kind, bare_app_spec)
	}
}

test_violation_carries_metadata_and_details if {
	policy.deny == {{
		"name": "readiness-probe",
		"severity": "LOW",
		"errcode": "MT1002",
		"msg": missing_app,
		"details": {"container": "app"},
	}} with input.request as fixtures.workload("Deployment", bare_app_spec)
}

test_every_container_is_reported if {
	spec := {"containers": [fixtures.bare_container("one"), fixtures.bare_container("two")]}
	{d.msg | some d in policy.deny} == {
		"[FAIL] LOW - Readiness Probe missing for container \"one\" (MT1002)",
		"[FAIL] LOW - Readiness Probe missing for container \"two\" (MT1002)",
	} with input.request as fixtures.workload("StatefulSet", spec)
}

test_null_probe_counts_as_missing if {
	spec := {"containers": [object.union(fixtures.good_container("app"), {"readinessProbe": null})]}
	{d.msg | some d in policy.deny} == {missing_app} with input.request as fixtures.workload("DaemonSet", spec)
}

test_compliant_workload_passes if {
	count(policy.deny) == 0 with input.request as fixtures.workload("Deployment", {"containers": [fixtures.good_container("app")]})
}

test_init_and_ephemeral_containers_need_no_probe if {
	spec := {
		"initContainers": [fixtures.bare_container("init")],
		"containers": [fixtures.good_container("app")],
		"ephemeralContainers": [fixtures.bare_container("debug")],
	}
	count(policy.deny) == 0 with input.request as fixtures.workload("Pod", spec)
}

test_jobs_and_cronjobs_are_ignored if {
	every kind in {"Job", "CronJob"} {
		not policy.matches with input.request as fixtures.workload(kind, bare_app_spec)
		count(policy.deny) == 0 with input.request as fixtures.workload(kind, bare_app_spec)
	}
}

test_job_owned_pod_is_ignored if {
	req := fixtures.pod({"name": "batch-x1", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "batch", "controller": true}]}, bare_app_spec)
	count(policy.deny) == 0 with input.request as req
}

test_singleton_pod_is_checked if {
	req := fixtures.pod({"name": "lonely"}, bare_app_spec)
	{d.msg | some d in policy.deny} == {missing_app} with input.request as req
}

test_other_kinds_are_ignored if {
	req := fixtures.request("Service", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
	not policy.matches with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [fixtures.workload("Deployment", bare_app_spec)] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
