package test.kubernetes.admission.pss_run_as_non_root

import rego.v1

import data.kubernetes.admission.pss_run_as_non_root as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_pod_level_true_covers_the_containers if {
	count(denies(pss.pod({"securityContext": {"runAsNonRoot": true}, "containers": [pss.container("app", {})]}), "restricted", "v1.0")) == 0
}

test_unset_and_false_fail if {
	spec := {"containers": [pss.container("app", {}), pss.container("root", {"runAsNonRoot": false}), pss.container("ok", {"runAsNonRoot": true})]}
	msgs(pss.pod(spec), "restricted", "latest") == {
		"[FAIL] HIGH - container \"app\" does not set securityContext.runAsNonRoot, nor does the pod; restricted requires true (on the container, or on the pod) (MT3015)",
		"[FAIL] HIGH - container \"root\" sets securityContext.runAsNonRoot=false; restricted requires true (on the container, or on the pod) (MT3015)",
	}
}

test_pod_level_false_fails_even_when_containers_set_true if {
	msgs(pss.pod({"securityContext": {"runAsNonRoot": false}, "containers": [pss.container("app", {"runAsNonRoot": true})]}), "restricted", "latest") == {"[FAIL] HIGH - pod sets spec.securityContext.runAsNonRoot=false; restricted requires true (MT3015)"}
}

test_user_namespaces_are_exempt_from_v1_35 if {
	req := pss.pod({"hostUsers": false, "containers": [pss.container("app", {"runAsNonRoot": false})]})
	every version in pss.versions {
		count(denies(req, "restricted", version)) == expected(version)
	}
}

expected(version) := 1 if pss.minor(version) < 35
else := 0

test_windows_is_not_exempt if {
	count(denies(pss.pod({"os": {"name": "windows"}, "containers": [pss.container("app", {})]}), "restricted", "latest")) == 1
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {})]}), "restricted", "latest")
	metadata_ok(d)
	count(denies(pss.pod({"containers": [pss.container("app", {})]}), "baseline", "latest")) == 0
}
