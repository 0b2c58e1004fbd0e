package test.kubernetes.admission.host_port

import rego.v1

import data.kubernetes.admission.host_port as policy
import data.test.magtape.fixtures

with_host_port(name, port) := object.union(fixtures.good_container(name), {"ports": [{"containerPort": 8080, "hostPort": port}]})

test_host_port_fails_in_every_workload_kind if {
	every kind in {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController", "CronJob"} {
		{d.msg | some d in policy.deny} == {"[FAIL] HIGH - hostPort is configured for container \"app\" (MT1008)"} with input.request as fixtures.workload(kind, {"containers": [with_host_port("app", 8080)]})
	}
}

test_violation_carries_metadata_and_details if {
	container := object.union(fixtures.good_container("app"), {"ports": [{"containerPort": 80, "hostPort": 80}, {"containerPort": 81}, {"containerPort": 443, "hostPort": 443}]})
	policy.deny == {{
		"name": "host-port",
		"severity": "HIGH",
		"errcode": "MT1008",
		"msg": "[FAIL] HIGH - hostPort is configured for container \"app\" (MT1008)",
		"details": {"container": "app", "hostPorts": [80, 443]},
	}} with input.request as fixtures.workload("DaemonSet", {"containers": [container]})
}

test_init_container_host_port_fails if {
	spec := {"initContainers": [with_host_port("init", 9000)], "containers": [fixtures.good_container("app")]}
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - hostPort is configured for container \"init\" (MT1008)"} with input.request as fixtures.workload("Deployment", spec)
}

test_ephemeral_container_host_port_fails if {
	spec := {"containers": [fixtures.good_container("app")], "ephemeralContainers": [with_host_port("debug", 9001)]}
	{d.msg | some d in policy.deny} == {"[FAIL] HIGH - hostPort is configured for container \"debug\" (MT1008)"} with input.request as fixtures.workload("Pod", spec)
}

test_container_ports_without_host_port_pass if {
	spec := {"containers": [fixtures.good_container("app"), with_host_port("zero", 0)]}
	count(policy.deny) == 0 with input.request as fixtures.workload("Deployment", spec)
}

test_other_kinds_are_ignored if {
	req := fixtures.request("Service", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80, "nodePort": 30080}]}})
	not policy.matches with input.request as req
}

# deny writes out name, severity and errcode (messages.failure): in every
# deny rule they must be those of policy_metadata.
test_failures_carry_the_policy_metadata if {
	every req in [fixtures.workload("Deployment", {"containers": [with_host_port("app", 8080)]})] {
		fixtures.identities(policy.deny) == {fixtures.identity(policy.policy_metadata)} with input.request as req
	}
}
