package test.kubernetes.admission.pss_host_ports

import rego.v1

import data.kubernetes.admission.pss_host_ports as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

test_host_ports_fail_in_every_container_list if {
	spec := {
		"initContainers": [object.union(pss.container("init", {}), {"ports": [{"containerPort": 80, "hostPort": 80}]})],
		"containers": [object.union(pss.container("app", {}), {"ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8081}]})],
	}
	msgs(pss.pod(spec), "baseline", "v1.0") == {
		"[FAIL] HIGH - container \"init\" sets ports[*].hostPort=80; baseline requires 0 or unset (MT3006)",
		"[FAIL] HIGH - container \"app\" sets ports[*].hostPort=8080, 8081; baseline requires 0 or unset (MT3006)",
	}
}

test_zero_and_unset_pass if {
	spec := {"containers": [object.union(pss.container("app", {}), {"ports": [{"containerPort": 80, "hostPort": 0}, {"containerPort": 81}]})]}
	count(denies(pss.pod(spec), "restricted", "latest")) == 0
}

test_mt1008_is_silent_under_a_level if {
	req := pss.pod({"containers": [object.union(pss.container("app", {}), {"ports": [{"containerPort": 80, "hostPort": 80}]})]})
	count(data.kubernetes.admission.host_port.deny) == 1 with input.request as req
	count(data.kubernetes.admission.host_port.deny) == 0 with input.request as req with data.magtape.pod_security as pss.setting("restricted", "latest")
	count(denies(req, "restricted", "latest")) == 1
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [object.union(pss.container("app", {}), {"ports": [{"hostPort": 1}]})]}), "baseline", "latest")
	[d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]
}
