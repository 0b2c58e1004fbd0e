package test.kubernetes.admission.pss_seccomp_baseline

import rego.v1

import data.kubernetes.admission.pss_seccomp_baseline as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_annotations_are_checked_before_v1_19 if {
	annotations := {
		"seccomp.security.alpha.kubernetes.io/pod": "unconfined",
		"container.seccomp.security.alpha.kubernetes.io/app": "localhost/x",
		"container.seccomp.security.alpha.kubernetes.io/side": "unconfined",
		"container.seccomp.security.alpha.kubernetes.io/missing": "unconfined",
	}
	spec := {"containers": [pss.container("app", {}), pss.container("side", {})]}
	every version in ["v1.0", "v1.10", "v1.18"] {
		msgs(pss.request("Deployment", annotations, spec), "baseline", version) == {
			"[FAIL] HIGH - pod has annotation seccomp.security.alpha.kubernetes.io/pod=\"unconfined\"; baseline requires runtime/default, docker/default or localhost/<profile> in the seccomp annotations (MT3010)",
			"[FAIL] HIGH - container \"side\" has annotation container.seccomp.security.alpha.kubernetes.io/side=\"unconfined\"; baseline requires runtime/default, docker/default or localhost/<profile> in the seccomp annotations (MT3010)",
		}
	}
}

# An empty value in YAML (null) is stored as "" by the API server: not a
# valid profile, so it fails as "" does.
test_an_empty_annotation_fails_before_v1_19 if {
	annotations := {
		"seccomp.security.alpha.kubernetes.io/pod": null,
		"container.seccomp.security.alpha.kubernetes.io/app": "",
	}
	spec := {"containers": [pss.container("app", {})]}
	msgs(pss.request("Pod", annotations, spec), "baseline", "v1.18") == {
		"[FAIL] HIGH - pod has annotation seccomp.security.alpha.kubernetes.io/pod=\"\"; baseline requires runtime/default, docker/default or localhost/<profile> in the seccomp annotations (MT3010)",
		"[FAIL] HIGH - container \"app\" has annotation container.seccomp.security.alpha.kubernetes.io/app=\"\"; baseline requires runtime/default, docker/default or localhost/<profile> in the seccomp annotations (MT3010)",
	}
	count(denies(pss.request("Pod", annotations, spec), "baseline", "v1.19")) == 0
}

test_fields_are_checked_from_v1_19 if {
	spec := {"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [pss.container("app", {"seccompProfile": {"type": "Unconfined"}})]}
	annotations := {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}
	every version in pss.versions {
		count(denies(pss.request("Pod", annotations, spec), "baseline", version)) == expected_fields(version)
	}
}

expected_fields(version) := 2 if pss.minor(version) >= 19
else := 1

test_valid_values_pass if {
	annotations := {"seccomp.security.alpha.kubernetes.io/pod": "docker/default", "container.seccomp.security.alpha.kubernetes.io/app": "runtime/default"}
	spec := {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "containers": [pss.container("app", {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}})]}
	every version in pss.versions {
		count(denies(pss.request("Pod", annotations, spec), "baseline", version)) == 0
	}
}

test_restricted_replaces_it_from_v1_19 if {
	spec := {"containers": [pss.container("app", {"seccompProfile": {"type": "Unconfined"}})]}
	count(denies(pss.pod(spec), "restricted", "v1.19")) == 0
	count(denies(pss.pod(spec), "restricted", "v1.18")) == 0
	count(denies(pss.request("Pod", {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}, spec), "restricted", "v1.18")) == 1
}

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {"seccompProfile": {"type": "Unconfined"}})]}), "baseline", "latest")
	metadata_ok(d)
}
