package test.kubernetes.admission.pss_privilege_escalation

import rego.v1

import data.kubernetes.admission.pss_privilege_escalation as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_containers_must_set_false if {
	spec := {
		"initContainers": [pss.container("init", {})],
		"containers": [pss.container("app", {"allowPrivilegeEscalation": true}), pss.container("ok", {"allowPrivilegeEscalation": false})],
	}
	msgs(pss.request("Deployment", {}, spec), "restricted", "latest") == {
		"[FAIL] HIGH - container \"init\" does not set securityContext.allowPrivilegeEscalation; restricted requires false (MT3014)",
		"[FAIL] HIGH - container \"app\" sets securityContext.allowPrivilegeEscalation=true; restricted requires false (MT3014)",
	}
}

test_applies_from_v1_8_and_exempts_windows_from_v1_25 if {
	linux := pss.pod({"containers": [pss.container("app", {})]})
	windows := pss.pod({"os": {"name": "windows"}, "containers": [pss.container("app", {})]})
	every version in pss.versions {
		count(denies(linux, "restricted", version)) == linux_expected(version)
		count(denies(windows, "restricted", version)) == windows_expected(version)
	}
}

linux_expected(version) := 1 if pss.minor(version) >= 8
else := 0

windows_expected(version) := 1 if {
	pss.minor(version) >= 8
	pss.minor(version) < 25
} else := 0

test_baseline_does_not_check_it if {
	count(denies(pss.pod({"containers": [pss.container("app", {})]}), "baseline", "latest")) == 0
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {})]}), "restricted", "latest")
	metadata_ok(d)
}
