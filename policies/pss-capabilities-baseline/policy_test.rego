package test.kubernetes.admission.pss_capabilities_baseline

import rego.v1

import data.kubernetes.admission.pss_capabilities_baseline as policy
import data.test.magtape.pss

denies(req, level, version) := found if {
	found := policy.deny with input.request as req with data.magtape.pod_security as pss.setting(level, version)
}

msgs(req, level, version) := {d.msg | some d in denies(req, level, version)}

test_non_default_capabilities_fail if {
	spec := {"containers": [pss.container("app", {"capabilities": {"add": ["NET_ADMIN", "CHOWN", "SYS_ADMIN"]}})]}
	msgs(pss.pod(spec), "baseline", "latest") == {"[FAIL] HIGH - container \"app\" adds \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add; baseline requires only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT (MT3004)"}
}

test_default_capabilities_pass if {
	caps := ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
	count(denies(pss.pod({"containers": [pss.container("app", {"capabilities": {"add": caps}})]}), "baseline", "latest")) == 0
}

test_names_are_exact if {
	# PSA compares the names as written: CAP_SYS_ADMIN or lower case are not in the set.
	count(denies(pss.pod({"containers": [pss.container("app", {"capabilities": {"add": ["chown"]}})]}), "baseline", "latest")) == 1
}

test_restricted_replaces_it_from_v1_22 if {
	spec := {"containers": [pss.container("app", {"capabilities": {"add": ["SYS_ADMIN"]}})]}
	every version in pss.versions {
		found := denies(pss.pod(spec), "restricted", version)
		count(found) == expected_under_restricted(version)
	}
}

expected_under_restricted(version) := 1 if pss.minor(version) < 22
else := 0

test_failures_carry_the_policy_metadata if {
	some d in denies(pss.pod({"containers": [pss.container("app", {"capabilities": {"add": ["X"]}})]}), "baseline", "latest")
	[d.name, d.severity, d.errcode] == [policy.policy_metadata.name, policy.policy_metadata.severity, policy.policy_metadata.errcode]
}
