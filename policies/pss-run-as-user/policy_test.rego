package test.kubernetes.admission.pss_run_as_user

import rego.v1

import data.kubernetes.admission.pss_run_as_user as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_root_user_fails_from_v1_23 if {
	req := pss.pod({"securityContext": {"runAsUser": 0}, "containers": [pss.container("app", {"runAsUser": 0}), pss.container("ok", {"runAsUser": 1000})]})
	every version in pss.versions {
		count(denies(req, "restricted", version)) == expected(version)
	}
	msgs(req, "restricted", "latest") == {
		"[FAIL] HIGH - pod sets spec.securityContext.runAsUser=0; restricted requires a non-zero user or unset (MT3016)",
		"[FAIL] HIGH - container \"app\" sets securityContext.runAsUser=0; restricted requires a non-zero user or unset (MT3016)",
	}
}

expected(version) := 2 if pss.minor(version) >= 23
else := 0

test_user_namespaces_are_exempt_from_v1_35 if {
	req := pss.pod({"hostUsers": false, "containers": [pss.container("app", {"runAsUser": 0})]})
	count(denies(req, "restricted", "v1.34")) == 1
	count(denies(req, "restricted", "v1.35")) == 0
}

test_unset_and_non_zero_pass if {
	count(denies(pss.pod({"securityContext": {"runAsUser": 1}, "containers": [pss.container("app", {})]}), "restricted", "latest")) == 0
	count(denies(pss.pod({"securityContext": {"runAsUser": 0}}), "baseline", "latest")) == 0
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {"runAsUser": 0})]}), "restricted", "latest")
	metadata_ok(d)
}
