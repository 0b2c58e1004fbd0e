package test.kubernetes.admission.pss_capabilities_restricted

import rego.v1

import data.kubernetes.admission.pss_capabilities_restricted as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_containers_must_drop_all_and_add_at_most_net_bind_service if {
	spec := {"containers": [
		pss.container("none", {}),
		pss.container("adds", {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}}),
		pss.container("ok", {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
	]}
	msgs(pss.request("Job", {}, spec), "restricted", "latest") == {
		"[FAIL] HIGH - container \"none\" does not drop ALL in securityContext.capabilities.drop; restricted requires capabilities.drop [\"ALL\"] and capabilities.add at most [\"NET_BIND_SERVICE\"] (MT3018)",
		"[FAIL] HIGH - container \"adds\" adds \"CHOWN\" in securityContext.capabilities.add; restricted requires capabilities.drop [\"ALL\"] and capabilities.add at most [\"NET_BIND_SERVICE\"] (MT3018)",
	}
}

test_applies_from_v1_22_and_exempts_windows_from_v1_25 if {
	linux := pss.pod({"containers": [pss.container("app", {})]})
	windows := pss.pod({"os": {"name": "windows"}, "containers": [pss.container("app", {"capabilities": {"add": ["SYS_ADMIN"]}})]})
	every version in pss.versions {
		count(denies(linux, "restricted", version)) == from(22, version)
		count(denies(windows, "restricted", version)) == between(22, 25, version)
	}
}

from(n, version) := 1 if pss.minor(version) >= n
else := 0

between(n, m, version) := 1 if {
	pss.minor(version) >= n
	pss.minor(version) < m
} else := 0

test_baseline_does_not_check_it if {
	count(denies(pss.pod({"containers": [pss.container("app", {})]}), "baseline", "latest")) == 0
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {})]}), "restricted", "latest")
	metadata_ok(d)
}
