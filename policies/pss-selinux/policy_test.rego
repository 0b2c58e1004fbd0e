package test.kubernetes.admission.pss_selinux

import rego.v1

import data.kubernetes.admission.pss_selinux as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

metadata_ok(d) if [d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]

test_custom_user_role_and_type_fail if {
	spec := {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}, "containers": [pss.container("app", {"seLinuxOptions": {"user": "system_u", "role": "system_r"}})]}
	msgs(pss.pod(spec), "baseline", "latest") == {
		"[FAIL] HIGH - pod sets spec.securityContext.seLinuxOptions.type=\"spc_t\"; baseline requires seLinuxOptions.type container_engine_t, container_init_t, container_kvm_t, container_t or unset, and no seLinuxOptions.user or seLinuxOptions.role (MT3008)",
		"[FAIL] HIGH - container \"app\" sets securityContext.seLinuxOptions.user=\"system_u\", securityContext.seLinuxOptions.role=\"system_r\"; baseline requires seLinuxOptions.type container_engine_t, container_init_t, container_kvm_t, container_t or unset, and no seLinuxOptions.user or seLinuxOptions.role (MT3008)",
	}
}

test_container_types_and_level_pass if {
	every t in ["container_t", "container_init_t", "container_kvm_t", ""] {
		spec := {"securityContext": {"seLinuxOptions": {"type": t, "level": "s0:c123,c456"}}, "containers": [pss.container("app", {"seLinuxOptions": {"type": t}})]}
		count(denies(pss.pod(spec), "baseline", "v1.0")) == 0
	}
}

test_container_engine_t_is_allowed_from_v1_31 if {
	spec := {"containers": [pss.container("app", {"seLinuxOptions": {"type": "container_engine_t"}})]}
	every version in pss.versions {
		count(denies(pss.pod(spec), "baseline", version)) == expected(version)
	}
}

expected(version) := 1 if pss.minor(version) < 31
else := 0

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {"seLinuxOptions": {"role": "r"}})]}), "baseline", "latest")
	metadata_ok(d)
}
