package test.kubernetes.admission.pss_host_probes

import rego.v1

import data.kubernetes.admission.pss_host_probes as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

probing(c) := pss.pod({"containers": [c]})

test_hosts_in_probes_and_hooks_fail_from_v1_34 if {
	c := object.union(pss.container("app", {}), {
		"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
		"readinessProbe": {"tcpSocket": {"host": "node.local", "port": 80}},
		"startupProbe": {"httpGet": {"port": 80}},
		"lifecycle": {"preStop": {"httpGet": {"host": "169.254.169.254", "port": 80}}},
	})
	every version in pss.versions {
		count(denies(probing(c), "baseline", version)) == expected(version)
	}
	msgs(probing(c), "restricted", "v1.34") == {"[FAIL] HIGH - container \"app\" sets livenessProbe.httpGet.host=\"10.0.0.1\", readinessProbe.tcpSocket.host=\"node.local\", lifecycle.preStop.httpGet.host=\"169.254.169.254\"; baseline requires no host in probes and lifecycle hooks (empty or unset) (MT3012)"}
}

expected(version) := 1 if pss.minor(version) >= 34
else := 0

test_each_handler_is_checked if {
	every handler in [["startupProbe"], ["lifecycle", "postStart"]] {
		every action in ["httpGet", "tcpSocket"] {
			c := object.union(pss.container("app", {}), nested(handler, {action: {"host": "h", "port": 80}}))
			count(denies(probing(c), "baseline", "latest")) == 1
		}
	}
}

nested(["startupProbe"], v) := {"startupProbe": v}

nested(["lifecycle", "postStart"], v) := {"lifecycle": {"postStart": v}}

test_empty_host_passes if {
	c := object.union(pss.container("app", {}), {"livenessProbe": {"httpGet": {"host": "", "port": 80}}})
	count(denies(probing(c), "baseline", "latest")) == 0
}

test_failures_carry_the_policy_metadata if {
	some d in denies(probing(object.union(pss.container("app", {}), {"livenessProbe": {"tcpSocket": {"host": "h", "port": 1}}})), "baseline", "latest")
	metadata_ok(d)
}
