package test.kubernetes.admission.pss_seccomp_restricted

import rego.v1

import data.kubernetes.admission.pss_seccomp_restricted as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_a_profile_is_required_from_v1_19 if {
	req := pss.pod({"containers": [pss.container("app", {})]})
	every version in pss.versions {
		count(denies(req, "restricted", version)) == expected(version)
	}
	msgs(req, "restricted", "latest") == {"[FAIL] HIGH - container \"app\" does not set securityContext.seccompProfile, nor does the pod; restricted requires securityContext.seccompProfile.type RuntimeDefault or Localhost, on the container or the pod (MT3017)"}
}

expected(version) := 1 if pss.minor(version) >= 19
else := 0

test_the_pod_profile_covers_the_containers if {
	count(denies(pss.pod({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "containers": [pss.container("app", {})]}), "restricted", "latest")) == 0
	count(denies(pss.pod({"containers": [pss.container("app", {"seccompProfile": {"type": "Localhost", "localhostProfile": "p"}})]}), "restricted", "latest")) == 0
}

test_unconfined_fails_on_pod_and_container if {
	spec := {"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [pss.container("app", {"seccompProfile": {"type": "Unconfined"}}), pss.container("inherits", {})]}
	count(denies(pss.pod(spec), "restricted", "latest")) == 3
}

test_windows_is_exempt_from_v1_25 if {
	req := pss.pod({"os": {"name": "windows"}, "containers": [pss.container("app", {"seccompProfile": {"type": "Unconfined"}})]})
	count(denies(req, "restricted", "v1.24")) == 1
	count(denies(req, "restricted", "v1.25")) == 0
	# nor does the baseline check stand in (restricted overrides it)
	count(data.kubernetes.admission.pss_seccomp_baseline.deny) == 0 with input.request as req with data.magtape.pod_security as pss.setting("restricted", "v1.25")
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {})]}), "restricted", "latest")
	metadata_ok(d)
}
